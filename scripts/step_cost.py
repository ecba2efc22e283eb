"""Where fit's time per training step goes: the README's breakdown, by ablation.

Each variant is one epoch of ``python -m fashion_conv.fit --model.backbone mlp`` (or the plain loop) in a fresh
process with one torch thread; the figure is CPU time (``time.process_time``) of the epoch's training batches per
optimizer step, so other processes on a shared machine count less than in wall time. Variants alternate and the
medians over ``--repeats`` are printed as a Markdown table.

    python scripts/step_cost.py --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "plain": "the plain loop (bench's `plain`: one indexing op a batch, fused Adam, no Lightning)",
    "one-batch-setattr": "as one-batch, but with nn.Module's `__setattr__` for Lightning's `_current_fx_name`",
    "one-batch": "fit with `--data.steps_per_call 1`: Lightning's automatic optimization, one batch a call",
    "group-hooks": "groups of 16 a call, each step through Lightning's `manual_backward` and `optimizer.step()`",
    "fit": "fit's default: groups of 16 a call, steps without the hook dispatch that nothing overrides",
}


def worker(variant: str, data_dir: str, val_size: int) -> dict:
    import torch
    from lightning import Callback
    from torch import nn

    torch.set_num_threads(1)
    if variant == "plain":
        from fashion_conv.research.bench import plain_worker

        spec = {"seed": 42, "data_dir": data_dir, "val_size": val_size, "train_size": None, "backbone": "mlp", "epochs": 1,
                "cpu_time": True}  # fmt: skip
        result = plain_worker(spec)
        return {"cpu_s": result["epoch_seconds"][0], "steps": -(-result["samples"] // 64)}
    from fashion_conv import fit
    from fashion_conv.models.classifier import FashionClassifier

    if variant == "group-hooks":
        FashionClassifier._plain_steps = lambda self: False
    if variant == "one-batch-setattr":
        FashionClassifier.__setattr__ = nn.Module.__setattr__

    class CpuTimer(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == trainer.num_training_batches - 1:
                self.cpu_s, self.steps = time.process_time() - self.start, trainer.global_step

    timer = CpuTimer()
    with tempfile.TemporaryDirectory() as root:
        args = ["--model.backbone", "mlp", "--trainer.max_epochs", "1", "--trainer.default_root_dir", root, "--explain_figures", "false",
                "--data.data_dir", data_dir, "--data.val_size", str(val_size)]  # fmt: skip
        if variant.startswith("one-batch"):
            args += ["--data.steps_per_call", "1"]
        with contextlib.redirect_stdout(sys.stderr):
            assert fit.run(args, callbacks=[timer])["test_acc"] > 0
    return {"cpu_s": timer.cpu_s, "steps": timer.steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measurements per variant; figures are medians (default: 3)")
    parser.add_argument("--data-dir", default="data", help="folder holding processed/ (default: data)")
    parser.add_argument("--val-size", type=int, default=5000, help="validation images held out, as fit's (default: 5000)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data_dir, args.val_size)))
        return 0
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for r in range(args.repeats):
        for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            command = [sys.executable, __file__, "--worker", variant, "--data-dir", args.data_dir, "--val-size", str(args.val_size)]
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {variant} repeat {r + 1}: {runs[variant][-1]}", file=sys.stderr)
    us = {v: statistics.median(x["cpu_s"] / x["steps"] * 1e6 for x in rs) for v, rs in runs.items()}
    print("| variant | CPU µs per step | over plain | what it is |\n|---|---|---|---|")
    for v, text in VARIANTS.items():
        print(f"| {v} | {us[v]:.0f} | {us[v] - us['plain']:+.0f} | {text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
