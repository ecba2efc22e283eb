"""Run a plan: every distinct variant once per seed, in order, printing one line per run; results as DataFrames."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from fashion_conv.experiments.plans import Variant
from fashion_conv.experiments.runs import Conditions, train_run


def run_plan(
    runs: dict[Variant, list[str]], seeds: list[int], cond: Conditions, logs_dir: Path, max_shift: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results: one row per variant and seed, curves: one row per epoch of each run).

    A variant's TensorBoard runs are ``<logs_dir>/<first experiment using it>/<variant>-seed<k>``, so
    ``tensorboard --logdir <logs_dir>`` overlays every run of a report. The translation experiment's variants
    also get the shift probe.
    """
    rows, curves = [], []
    total, done = len(runs) * len(seeds), 0
    for variant, experiments in runs.items():
        for seed in seeds:
            done += 1
            start = time.perf_counter()
            shift = max_shift if "translation" in experiments else None
            row, epochs = train_run(
                variant, seed, cond, logs_dir / experiments[0] / f"{variant.slug}-seed{seed}", shift
            )
            row["experiments"] = ";".join(experiments)
            rows.append(row)
            curves += epochs
            print(
                f"[{done}/{total}] {variant.label:<22} seed {seed}: test acc {row['test_acc']:.4f}, "
                f"val acc {row['val_acc']:.4f}, {row['epoch_seconds']:.1f} s/epoch ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return pd.DataFrame(rows), pd.DataFrame(curves)
