"""``python -m fashion_conv.bench``: the notebook's plain PyTorch loop and ``fashion_conv.fit``, timed side by side.

Each measurement runs in its own child process (so peak memory is its own), the variants alternate, and
every figure is the median over ``--repeats``, so drift of a shared machine does not bias the ratios.
Prints seconds per epoch, samples per second, peak memory, test accuracy and the ratio to the reference
loop, for each backbone; then the data start-up (cold CSV parse, warm cache load) and the cost against
training-set size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {
    # name: fit command-line arguments (None: the notebook's loop)
    "reference": None,
    "fit": [],
    "fit-fast": [
        "--trainer.precision", "bf16-mixed", "--data.batch_size", "256", "--model.lr", "4e-3", "--model.lr_schedule", "onecycle"
    ],  # fmt: skip
}


# ---- workers: one measurement each, in a child process ----


def reference_worker(spec: dict) -> dict:
    """The notebook's training loop: per-sample Dataset, DataLoader(batch 64, shuffle), Adam 1e-3, fp32."""
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from fashion_conv.backbones import build_backbone
    from fashion_conv.csvio import read_csv
    from fashion_conv.prepare import csv_paths

    class FashionMNISTDataset(Dataset):  # as in the notebook
        def __init__(self, X, y):
            self.X = torch.tensor(X, dtype=torch.float32)
            self.y = torch.tensor(y, dtype=torch.long)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, idx):
            return self.X[idx].reshape(1, 28, 28), self.y[idx]

    torch.manual_seed(spec["seed"])
    paths = csv_paths(spec["data_dir"])
    labels, images = read_csv(paths["train"])
    n = spec["train_size"]
    train = FashionMNISTDataset(images[:n].reshape(n, -1) / 255.0, labels[:n])
    loader = DataLoader(train, batch_size=64, shuffle=True)
    model = build_backbone(spec["backbone"])
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    epoch_seconds = []
    for _ in range(spec["epochs"]):
        start = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()  # the notebook accumulates total_loss += loss.item()
        epoch_seconds.append(time.perf_counter() - start)
    test_labels, test_images = read_csv(paths["test"])
    with torch.no_grad():
        x = torch.tensor(test_images.reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
        acc = (model(x).argmax(1) == torch.from_numpy(test_labels).long()).float().mean().item()
    return {"epoch_seconds": epoch_seconds, "samples": n, "test_acc": acc}


class EpochTimer:
    """Times each training epoch (its batches only, not validation); a Lightning Callback built lazily."""

    def __new__(cls):
        from lightning import Callback

        class _Timer(Callback):
            def __init__(self):
                self.seconds, self.samples, self._start = [], 0, 0.0

            def on_train_epoch_start(self, trainer, pl_module):
                self._start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if batch_idx == trainer.num_training_batches - 1:
                    if trainer.strategy.root_device.type == "cuda":
                        torch.cuda.synchronize()
                    self.seconds.append(time.perf_counter() - self._start)
                if trainer.current_epoch == 0:
                    self.samples += len(batch[1])

        return _Timer()


def fit_worker(spec: dict) -> dict:
    """``fashion_conv.fit`` as a user runs it (TensorBoard, checkpoints, validation), timed per training epoch."""
    from fashion_conv import fit

    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as root:
        argv = [
            "--data.data_dir", spec["data_dir"], "--model.backbone", spec["backbone"],
            "--trainer.max_epochs", str(spec["epochs"]), "--trainer.default_root_dir", root,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--seed_everything", str(spec["seed"]), "--data.train_size", str(spec["train_size"]),
            "--data.val_size", str(spec["val_size"]), *spec["args"],
        ]  # fmt: skip
        cli = fit.build_cli(argv)
        cli.trainer.callbacks.append(timer)
        summary = fit.train_and_test(cli.trainer, cli.model, cli.datamodule, None, spec["seed"])
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"epoch_seconds": timer.seconds, "samples": timer.samples, "test_acc": summary["test_acc"], "peak_gpu_mb": peak_gpu}


def data_worker(spec: dict) -> dict:
    from fashion_conv.csvio import parse_csv, read_csv
    from fashion_conv.prepare import csv_paths

    path = csv_paths(spec["data_dir"])["train"]
    start = time.perf_counter()
    parse_csv(path)
    cold = time.perf_counter() - start
    read_csv(path)  # make sure the cache exists
    start = time.perf_counter()
    read_csv(path)
    return {"cold_parse_s": cold, "warm_load_s": time.perf_counter() - start}


WORKERS = {"reference": reference_worker, "fit": fit_worker, "data": data_worker}


def run_child(kind: str, spec: dict) -> dict:
    """Run one worker in a fresh interpreter; its result includes its own peak memory."""
    proc = subprocess.run(
        [sys.executable, "-m", "fashion_conv.bench", "--worker", kind, json.dumps(spec)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the parent: alternate, repeat, take medians, print ----


def measure(args) -> dict:
    results: dict = {"machine": machine(), "backbones": {}, "data": None, "scale": []}
    base = {"data_dir": str(args.data_dir), "epochs": args.epochs, "seed": 42, "train_size": args.train_size, "val_size": args.val_size}
    for backbone in args.backbones:
        runs: dict[str, list] = {v: [] for v in args.variants}
        for r in range(args.repeats):
            order = args.variants if r % 2 == 0 else args.variants[::-1]  # alternate, so drift hits both sides
            for variant in order:
                spec = {**base, "backbone": backbone, "args": VARIANTS[variant] or []}
                kind = "reference" if VARIANTS[variant] is None else "fit"
                runs[variant].append(run_child(kind, spec))
                print(f"  {backbone:5s} {variant:10s} repeat {r + 1}: {runs[variant][-1]['epoch_seconds']}", file=sys.stderr)
        results["backbones"][backbone] = {v: summarize(rs) for v, rs in runs.items()}
    data_runs = [run_child("data", base) for _ in range(args.repeats)]
    results["data"] = {k: statistics.median(r[k] for r in data_runs) for k in ("cold_parse_s", "warm_load_s")}
    for size in args.scale:
        spec = {**base, "backbone": args.backbones[0], "args": [], "train_size": size, "epochs": 1}
        times = [run_child("fit", spec)["epoch_seconds"][0] for _ in range(args.repeats)]
        results["scale"].append({"backbone": args.backbones[0], "train_size": size, "epoch_s": statistics.median(times)})
    return results


def summarize(runs: list[dict]) -> dict:
    per_epoch = [statistics.median(r["epoch_seconds"]) for r in runs]
    seconds = statistics.median(per_epoch)
    return {
        "epoch_s": seconds,
        "samples_per_s": runs[0]["samples"] / seconds,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs) if runs[0]["peak_rss_mb"] else None,
        "peak_gpu_mb": runs[0].get("peak_gpu_mb"),
        "test_acc": statistics.median(r["test_acc"] for r in runs),
        "all_epoch_s": per_epoch,
    }


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), torch {torch.__version__}"
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def print_table(results: dict) -> None:
    print(f"\nmachine: {results['machine']}")
    print(f"{'backbone':8s} {'variant':10s} {'s/epoch':>8s} {'samples/s':>10s} {'peak MB':>8s} {'test acc':>8s} {'vs reference':>12s}")
    for backbone, variants in results["backbones"].items():
        ref = variants.get("reference")
        for name, r in variants.items():
            ratio = f"{r['epoch_s'] / ref['epoch_s']:.2f}x time" if ref else ""
            peak = r["peak_gpu_mb"] or r["peak_rss_mb"]
            print(f"{backbone:8s} {name:10s} {r['epoch_s']:8.2f} {r['samples_per_s']:10,.0f} {peak or 0:8.0f} {r['test_acc']:8.4f} {ratio:>12s}")
    d = results["data"]
    print(f"data start-up: cold parse of the train CSV {d['cold_parse_s']:.2f} s, warm start from the cache {d['warm_load_s']:.3f} s")
    for s in results["scale"]:
        print(f"scale: {s['backbone']} fit, {s['train_size']:,} training images: {s['epoch_s']:.2f} s/epoch "
              f"({s['epoch_s'] / s['train_size'] * 1e6:.1f} us/image)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_conv.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--backbones", type=lambda s: s.split(","), default=["mlp", "cnn", "cnn5"])
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=1, help="epochs per measurement (test accuracy after them)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=55000, help="training images (the default split: 55,000)")
    parser.add_argument("--val-size", type=int, default=5000, help="validation images held out by fit (default 5,000)")
    parser.add_argument("--scale", type=lambda s: [int(x) for x in s.split(",") if x], default=[10000, 30000, 55000])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.worker:
        kind, spec = args.worker
        result = WORKERS[kind](json.loads(spec))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process's peak
        print(json.dumps(result))
        return 0
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    results = measure(args)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
