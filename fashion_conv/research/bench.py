"""``python -m fashion_conv.research.bench``: the notebook's loop, a plain PyTorch loop and ``fashion_conv.fit``, timed side by side.

Each measurement runs in its own child process (so peak memory is its own), the variants alternate, and every figure
is the median over ``--repeats``, so drift of a shared machine does not bias the ratios. Prints a Markdown
table: seconds per epoch, samples per second, peak memory, test accuracy, the ratios to the notebook loop and to the
plain loop, and Lightning's cost per step over the plain loop; then data start-up and cost against training-set size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning import Callback

VARIANTS = {
    # name: fit command-line arguments (None: a hand-written loop, not fit)
    "reference": None,  # the notebook's own code, verbatim
    "plain": None,  # the fastest hand-written loop doing fit's work: the limit for fit's per-step cost
    "fit": [],
    "fit-fast": [
        "--trainer.precision", "bf16-mixed", "--data.batch_size", "256", "--model.lr", "4e-3", "--model.lr_schedule", "onecycle"
    ],  # fmt: skip
}


# ---- workers: one measurement each, in a child process ----


def reference_worker(spec: dict) -> dict:
    """The notebook's code path, verbatim: pandas read_csv, ``.values / 255.0`` (float64, column-major), a per-sample
    Dataset, DataLoader(batch_size=64, shuffle=True), Adam 1e-3, fp32, ``total_loss += loss.item()`` per step."""
    import pandas as pd
    from torch import nn, optim
    from torch.utils.data import DataLoader, Dataset

    from fashion_conv.models.backbones import build_backbone
    from fashion_conv.data.files import csv_paths

    class FashionMNISTDataset(Dataset):
        def __init__(self, X, y):
            self.X = torch.tensor(X, dtype=torch.float32)
            self.y = torch.tensor(y, dtype=torch.long)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, idx):
            image = self.X[idx].reshape(1, 28, 28)  # 1 channel
            label = self.y[idx]
            return image, label

    torch.manual_seed(spec["seed"])
    paths = csv_paths(spec["data_dir"])
    train_df = pd.read_csv(paths["train"]).iloc[: spec["train_size"]]  # the notebook trains on all rows
    test_df = pd.read_csv(paths["test"])
    X_train = train_df.iloc[:, 1:].values / 255.0
    y_train = train_df.iloc[:, 0].values
    X_test = test_df.iloc[:, 1:].values / 255.0
    y_test = test_df.iloc[:, 0].values
    train_loader = DataLoader(FashionMNISTDataset(X_train, y_train), batch_size=64, shuffle=True)
    model = build_backbone(spec["backbone"])
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    epoch_seconds = []
    for _ in range(spec["epochs"]):
        start = time.perf_counter()
        total_loss = 0
        for x, y in train_loader:
            optimizer.zero_grad()
            preds = model(x)
            loss = criterion(preds, y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        epoch_seconds.append(time.perf_counter() - start)
    test = FashionMNISTDataset(X_test, y_test)
    return {"epoch_seconds": epoch_seconds, "samples": len(train_df), "test_acc": test_accuracy(model, test.X.reshape(-1, 1, 28, 28), test.y)}


def plain_worker(spec: dict) -> dict:
    """The fastest hand-written loop for fit's work: fit's training split held as uint8 tensors, one indexing op per
    batch of 64, channels-last convs, fused Adam 1e-3, fp32, no per-step host sync, and fit's malloc setting
    (``keep_freed_memory``), so that the difference to fit is Lightning's; no Lightning."""
    import torch.nn.functional as F

    from fashion_conv.utils.memory import keep_freed_memory

    keep_freed_memory()
    from fashion_conv.models.backbones import build_backbone
    from fashion_conv.data.datamodule import FashionMNISTDataModule

    torch.manual_seed(spec["seed"])
    data = FashionMNISTDataModule(spec["data_dir"], val_size=spec["val_size"], train_size=spec["train_size"], download=False)
    data.setup("fit")
    data.setup("test")
    images, labels = data.train_set.images, data.train_set.labels  # (N, 1, 28, 28) uint8, (N,) int64
    model = build_backbone(spec["backbone"]).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    clock = time.perf_counter
    epoch_seconds = []
    for _ in range(spec["epochs"]):
        start = clock()
        for idx in torch.randperm(len(labels)).split(64):
            x = images[idx].float().div_(255).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epoch_seconds.append(clock() - start)
    test = data.test_set
    return {"epoch_seconds": epoch_seconds, "samples": len(labels), "test_acc": test_accuracy(model, test.images.float() / 255, test.labels)}


def test_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy on the test set (not timed), in batches of 1,000: x (N, 1, 28, 28) float in [0, 1], y (N,)."""
    model.eval()
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


class EpochTimer(Callback):
    """Times each training epoch (its batches only, not validation); the last one made is ``EpochTimer.last``."""

    last: EpochTimer | None = None

    def __init__(self) -> None:
        self.seconds, self.samples, self._start = [], 0, 0.0
        EpochTimer.last = self

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == trainer.num_training_batches - 1:
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._start)
        if trainer.current_epoch == 0:
            self.samples += len(batch[1])


def fit_worker(spec: dict) -> dict:
    """``python -m fashion_conv.fit`` as a user runs it (progress bar, TensorBoard, checkpoints, validation, test),
    with an epoch timer added; test accuracy from the run's metrics.json."""
    with tempfile.TemporaryDirectory() as root:
        argv = [
            "--data.data_dir", spec["data_dir"], "--model.backbone", spec["backbone"],
            "--trainer.max_epochs", str(spec["epochs"]), "--trainer.default_root_dir", root,
            "--seed_everything", str(spec["seed"]), "--data.train_size", str(spec["train_size"]),
            "--data.val_size", str(spec["val_size"]), "--trainer.callbacks+=fashion_conv.research.bench.EpochTimer", *spec["args"],
        ]  # fmt: skip
        metrics = run_fit(argv, Path(root))
    from fashion_conv.research import bench  # the module fit imported the callback from (this file may run as __main__)

    timer = bench.EpochTimer.last
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"epoch_seconds": timer.seconds, "samples": timer.samples, "test_acc": metrics["test_acc"], "peak_gpu_mb": peak_gpu}


def run_fit(argv: list[str], root: Path) -> dict:
    """One run through fit's own entry point; its metrics.json. (The one place that calls fit.)"""
    from fashion_conv import fit

    with contextlib.redirect_stdout(sys.stderr):  # the run summary; stdout carries the worker's result
        if fit.main(argv) != 0:
            raise RuntimeError(f"fit failed: {' '.join(argv)}")
    (found,) = root.glob("lightning_logs/*/version_*/metrics.json")
    return json.loads(found.read_text())


def data_worker(spec: dict) -> dict:
    from fashion_conv.data.csvio import parse_csv, read_csv
    from fashion_conv.data.files import csv_paths

    path = csv_paths(spec["data_dir"])["train"]
    start = time.perf_counter()
    parse_csv(path)
    cold = time.perf_counter() - start
    read_csv(path)  # make sure the cache exists
    start = time.perf_counter()
    read_csv(path)
    return {"cold_parse_s": cold, "warm_load_s": time.perf_counter() - start}


WORKERS = {"reference": reference_worker, "plain": plain_worker, "fit": fit_worker, "data": data_worker}


def run_child(kind: str, spec: dict) -> dict:
    """Run one worker in a fresh interpreter; its result includes its own peak memory."""
    proc = subprocess.run(
        [sys.executable, "-m", "fashion_conv.research.bench", "--worker", kind, json.dumps(spec)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the parent: alternate, repeat, take medians, print ----


def measure(args) -> dict:
    results: dict = {"machine": machine(args.threads), "backbones": {}, "data": None, "scale": []}
    base = {"data_dir": str(args.data_dir), "epochs": args.epochs, "seed": 42, "train_size": args.train_size,
            "val_size": args.val_size, "threads": args.threads}  # fmt: skip
    for backbone in args.backbones:
        runs: dict[str, list] = {v: [] for v in args.variants}
        for r in range(args.repeats):
            order = args.variants if r % 2 == 0 else args.variants[::-1]  # alternate, so drift hits both sides
            for variant in order:
                spec = {**base, "backbone": backbone, "args": VARIANTS[variant] or []}
                runs[variant].append(run_child(variant if VARIANTS[variant] is None else "fit", spec))
                seconds = ", ".join(f"{s:.2f}" for s in runs[variant][-1]["epoch_seconds"])
                print(f"  {backbone} {variant} repeat {r + 1}: {seconds} s/epoch", file=sys.stderr)
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
        "samples": runs[0]["samples"],
        "samples_per_s": runs[0]["samples"] / seconds,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "peak_gpu_mb": runs[0].get("peak_gpu_mb"),
        "test_acc": statistics.median(r["test_acc"] for r in runs),
        "all_epoch_s": per_epoch,
    }


def machine(threads: int | None) -> str:
    torch_threads = threads or torch.get_num_threads()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), torch {torch.__version__}"
    return f"CPU {cpu_name()}, {os.cpu_count()} cores, {torch_threads} torch threads, torch {torch.__version__}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown_table(results: dict, epochs: int) -> str:
    """The speed table (docs/speed.md): one row per backbone and variant, ratios to the notebook loop and to the plain loop."""
    lines = [
        f"machine: {results['machine']}",
        "",
        f"| backbone | variant | s/epoch | samples/s | peak {'GPU' if torch.cuda.is_available() else 'RSS'} (MB) "
        f"| test acc after {epochs} epoch{'s' * (epochs > 1)} | time vs reference | time vs plain | µs/step over plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for backbone, variants in results["backbones"].items():
        ref, plain = variants.get("reference"), variants.get("plain")
        for name, r in variants.items():
            vs_ref = f"{r['epoch_s'] / ref['epoch_s']:.2f}x" if ref else ""
            vs_plain = f"{r['epoch_s'] / plain['epoch_s']:.2f}x" if plain else ""
            steps = -(-r["samples"] // 64)  # optimizer steps (batches of 64) per epoch: fit's and plain's
            over = f"{(r['epoch_s'] - plain['epoch_s']) / steps * 1e6:+.0f}" if plain and name == "fit" else ""
            peak = r["peak_gpu_mb"] or r["peak_rss_mb"]
            lines.append(
                f"| {backbone} | {name} | {r['epoch_s']:.2f} | {r['samples_per_s']:,.0f} | {peak:.0f} | {r['test_acc']:.2%} "
                f"| {vs_ref} | {vs_plain} | {over} |".replace("%", " %")
            )
    d = results["data"]
    lines += ["", f"Data start-up: cold parse of the train CSV {d['cold_parse_s']:.2f} s, warm start from the cache {d['warm_load_s']:.3f} s."]
    if results["scale"]:
        lines += ["", "| backbone | training images | fit s/epoch | µs/image |", "|---|---|---|---|"]
        for s in results["scale"]:
            lines.append(f"| {s['backbone']} | {s['train_size']:,} | {s['epoch_s']:.2f} | {s['epoch_s'] / s['train_size'] * 1e6:.1f} |")
    return "\n".join(lines)


class OneLineErrors(argparse.ArgumentParser):
    """A bad command line is one ``error:`` line, not a usage block."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def csv_list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrors(
        prog="python -m fashion_conv.research.bench",
        description="Time the notebook's training loop, a plain PyTorch loop and fashion_conv.fit side by side, "
        "each measurement in a fresh process, variants alternated, medians over repeats; prints a Markdown table.",
    )
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--backbones", type=csv_list, default=["mlp", "cnn", "cnn5"], metavar="NAMES",
                        help="comma-separated backbones to time (registered names or class paths; default: mlp,cnn,cnn5)")
    parser.add_argument("--variants", type=csv_list, default=list(VARIANTS), metavar="NAMES",
                        help=f"comma-separated variants (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per measurement; test accuracy is taken after them (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per variant; figures are their medians (default: 3)")
    parser.add_argument("--train-size", type=int, default=55000, help="training images (default: 55,000, fit's default split)")
    parser.add_argument("--val-size", type=int, default=5000, help="validation images held out by fit (default: 5,000)")
    parser.add_argument("--scale", type=lambda s: [int(x) for x in csv_list(s)], default=[10000, 30000, 55000], metavar="SIZES",
                        help="comma-separated training-set sizes for the cost-against-size rows (fit, first backbone); '' skips them (default: 10000,30000,55000)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads in every measurement (default: torch's own choice; 1 gives steadier figures on a busy machine)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder holding processed/ (default: data)")
    parser.add_argument("--json", type=Path, help="also write the results, every repeat included, to this JSON file")
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    from fashion_conv.models.backbones import list_backbones
    from fashion_conv.data.files import csv_paths

    if args.worker:
        return args
    missing = [str(p) for p in csv_paths(args.data_dir).values() if not p.is_file()]
    if missing:
        parser.error(f"--data-dir: {', '.join(missing)} not found; run python -m fashion_conv.prepare first")
    bad = [b for b in args.backbones if b not in list_backbones() and "." not in b]
    if bad:
        parser.error(f"--backbones: unknown backbone(s) {', '.join(bad)}; choose from {', '.join(list_backbones())} or give a class path")
    for name in ("epochs", "repeats", "train_size", "val_size"):
        if getattr(args, name) < (0 if name == "val_size" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        kind, spec = args.worker
        spec = json.loads(spec)
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        result = WORKERS[kind](spec)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process's peak
        print(json.dumps(result))
        return 0
    try:
        results = measure(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown_table(results, args.epochs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
