"""``python -m fashion_conv.research.experiments``: parse the command line, run the chosen experiments, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from fashion_conv.utils.errors import FashionConvError
from fashion_conv.research.experiments.plans import EXPERIMENTS, PRESETS, Preset, plan
from fashion_conv.research.experiments.report import write_report
from fashion_conv.research.experiments.plans import Conditions
from fashion_conv.research.experiments.suite import run_plan
from fashion_conv.research.spread import StudyStopped, add_spread_arguments, check_spread_arguments, stopped_hint


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def experiment_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown experiment {', '.join(unknown) or repr(text)}; choose from {','.join(EXPERIMENTS)}"
        )
    return [e for e in EXPERIMENTS if e in names]  # the report's order, each once


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fashion_conv.research.experiments", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    p.add_argument(
        "--experiments",
        type=experiment_list,
        default=list(EXPERIMENTS),
        help=f"comma-separated, from {','.join(EXPERIMENTS)} (default: all)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="full",
        help="full: all data, 3 seeds, 5 epochs; quick: a small subset, a few minutes on a CPU",
    )
    p.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default: the preset's, full 3, quick 2)")
    p.add_argument("--epochs", type=int, help="epochs of every run (default: the preset's, full 5, quick 2)")
    p.add_argument(
        "--data-dir", default="data", help="folder with processed/fashion-mnist-{train,test}.csv (default: data)"
    )
    p.add_argument("--out", type=Path, help="report folder (default: reports/<preset>)")
    p.add_argument(
        "--logs-dir", type=Path, help="run folders (default: lightning_logs/studies/experiments/<out folder name>)"
    )
    p.add_argument("--train-size", type=int, help="training images (default: the preset's, full: all 55,000)")
    p.add_argument("--val-size", type=int, help="validation images held out of the train CSV (default: the preset's)")
    p.add_argument(
        "--test-size", type=int, help="test images, a fixed random subset (default: the preset's, full: all)"
    )
    p.add_argument("--kernel-sizes", type=int_list, help="kernel ablation, odd sizes (default: 3,5,7)")
    p.add_argument("--max-shift", type=int, help="translation probe: shifts 0..K pixels (default: the preset's)")
    p.add_argument(
        "--train-sizes",
        type=int_list,
        help="sample efficiency: subset sizes besides the full set (default: the preset's)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", default="32-true", help="Lightning precision of every run (default: 32-true)")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (default: auto)")
    add_spread_arguments(p)
    return p


OVERRIDES = ("seeds", "epochs", "train_size", "val_size", "test_size", "kernel_sizes", "max_shift", "train_sizes")


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The chosen preset with the command line's overrides, checked."""
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    preset = dataclasses.replace(PRESETS[args.preset], **overrides)
    for name, value, low in (
        ("seeds", preset.seeds, 1),
        ("epochs", preset.epochs, 1),
        ("max-shift", preset.max_shift, 0),
    ):
        if value < low:
            raise FashionConvError(f"--{name} must be at least {low}, got {value}")
    if not preset.kernel_sizes or any(k < 1 or k % 2 == 0 for k in preset.kernel_sizes):
        raise FashionConvError(f"--kernel-sizes must be odd and positive ('same' padding), got {preset.kernel_sizes}")
    too_big = preset.train_size is not None and any(n >= preset.train_size for n in preset.train_sizes)
    if "efficiency" in args.experiments and (too_big or any(n < 1 for n in preset.train_sizes)):
        raise FashionConvError(
            f"--train-sizes must be positive and below --train-size {preset.train_size}, got {preset.train_sizes}"
        )
    return preset


def device_name(accelerator: str, threads: int) -> str:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU: {threads} thread{'s' * (threads > 1)} per run, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the error (or --help)
        return int(exc.code or 0)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one line per run instead of Lightning's banners
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    command = shlex.join(["python", "-m", "fashion_conv.research.experiments", *argv])
    try:
        preset = resolve_preset(args)
        out = args.out or Path("reports") / args.preset
        check_spread_arguments(args)
        logs_dir = args.logs_dir or Path("lightning_logs") / "studies" / "experiments" / out.resolve().name
        cond = Conditions(
            data_dir=str(args.data_dir), epochs=preset.epochs, train_size=preset.train_size, val_size=preset.val_size,
            test_size=preset.test_size, batch_size=args.batch_size, lr=args.lr, precision=args.precision, accelerator=args.accelerator,
        )  # fmt: skip
        seeds = list(range(preset.seeds))
        runs = plan(args.experiments, preset)
        print(
            f"{len(runs)} models x {len(seeds)} seeds = {len(runs) * len(seeds)} runs; TensorBoard: {logs_dir}",
            flush=True,
        )
        start = time.perf_counter()
        results, curves = run_plan(
            runs, seeds, cond, logs_dir, preset.max_shift, args.workers, args.ray_address, args.threads_per_run
        )
        wall = time.perf_counter() - start
        path = write_report(
            out,
            results,
            curves,
            args.experiments,
            args.preset,
            preset,
            cond,
            seeds,
            command,
            logs_dir,
            wall,
            device_name(args.accelerator, args.threads_per_run),
        )
    except (FashionConvError, MisconfigurationException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StudyStopped:
        print(stopped_hint(command), file=sys.stderr)
        return 128 + signal.SIGTERM
    print(f"Report: {path} ({wall / 60:.1f} min); results.csv, curves.csv and the figures beside it.")
    return 0
