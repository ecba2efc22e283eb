"""Run a plan: every distinct variant once per seed, as jobs of ``studies.spread``; results as DataFrames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fashion_conv.utils.errors import FashionConvError
from fashion_conv.research import spread
from fashion_conv.research.experiments.plans import Conditions, Variant
from fashion_conv.research.experiments.runs import train_run


def jobs(runs: dict[Variant, list[str]], seeds: list[int], cond: Conditions, logs_dir: Path, max_shift: int) -> list[spread.Job]:
    """One job per variant and seed. A variant's run folder is ``<logs_dir>/<first experiment using it>/<variant>-seed<k>``,
    so ``tensorboard --logdir <logs_dir>`` overlays every run of a report. The translation experiment's variants
    also get the shift probe."""
    return [
        spread.Job(f"{variant.label} seed {seed}", logs_dir / experiments[0] / f"{variant.slug}-seed{seed}", train_run,
                   {"variant": variant, "seed": seed, "cond": cond, "max_shift": max_shift if "translation" in experiments else None,
                    "run_dir": str(logs_dir / experiments[0] / f"{variant.slug}-seed{seed}")})
        for variant, experiments in runs.items() for seed in seeds
    ]  # fmt: skip


def describe(result: dict) -> str:
    row = result["row"]
    return f"test acc {row['test_acc']:.4f}, val acc {row['val_acc']:.4f}, {row['epoch_seconds']:.1f} s/epoch"


def run_plan(
    runs: dict[Variant, list[str]], seeds: list[int], cond: Conditions, logs_dir: Path, max_shift: int,
    workers: int = 1, ray_address: str | None = None, threads: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(results: one row per variant and seed, curves: one row per epoch of each run), in plan order.

    Raises ``FashionConvError`` naming the runs that failed: the report is not written from fewer seeds."""
    planned = jobs(runs, seeds, cond, logs_dir, max_shift)
    outcome = spread.run_jobs(planned, workers, ray_address, threads, describe)
    if outcome.failed:
        names = "; ".join(f"{name} ({error.splitlines()[-1]})" for name, error in outcome.failed.items())
        raise FashionConvError(
            f"{len(outcome.failed)} of {len(planned)} runs failed twice: {names}. The report is not written, since it "
            "would average fewer seeds; fix the cause and run the same command again (finished runs are kept)."
        )
    rows, curves = [], []
    for job, (variant, experiments) in zip(planned, ((v, e) for v, e in runs.items() for _ in seeds)):
        result = outcome.results[job.name]
        rows.append({**result["row"], "experiments": ";".join(experiments)})
        curves += result["curves"]
    return pd.DataFrame(rows), pd.DataFrame(curves)
