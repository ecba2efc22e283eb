"""Numbers to words: per-seed values of a variant, mean ± std, and whether a gap is larger than the seeds' spread."""

from __future__ import annotations

import statistics

import pandas as pd


def values(results: pd.DataFrame, label: str, column: str = "test_acc") -> list[float]:
    """Per-seed values of ``column`` for the variant ``label``, in seed order (empty if it was not run)."""
    rows = results[results["variant"] == label].sort_values("seed")
    return [float(v) for v in rows[column]]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def mean_std(vals: list[float], scale: float = 100, digits: int = 2) -> str:
    """``88.12 ± 0.31`` (sample std over seeds), ``88.12`` for one seed, ``n/a`` for none."""
    if not vals:
        return "n/a"
    mean = statistics.fmean(vals) * scale
    if len(vals) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(vals) * scale:.{digits}f}"


def verdict(a_name: str, a: list[float], b_name: str, b: list[float]) -> str:
    """Whether the gap between two sets of per-seed values is larger than the spread between seeds."""
    if len(a) < 2 or len(b) < 2:
        return "with a single seed the spread between seeds is not measured, so this may be noise"
    if min(a) > max(b):
        return f"every seed of {a_name} is above every seed of {b_name}: larger than the spread between seeds"
    if min(b) > max(a):
        return f"every seed of {a_name} is below every seed of {b_name}: larger than the spread between seeds"
    return (
        f"the seeds overlap ({a_name} {pct(min(a))}–{pct(max(a))}, {b_name} {pct(min(b))}–{pct(max(b))}): "
        "within the spread between seeds, so not a measured difference"
    )


def gap(a_name: str, a: list[float], b_name: str, b: list[float], what: str = "Test accuracy", unit: str = "%") -> str:
    """One sentence: the means (± std), the difference in percentage points, and its verdict."""
    if not a or not b:
        return f"{what}: {a_name} vs {b_name} not measured (not run)."
    diff = 100 * (statistics.fmean(a) - statistics.fmean(b))
    return (
        f"{what}: {a_name} {mean_std(a)} {unit} vs {b_name} {mean_std(b)} {unit}, "
        f"a difference of {diff:+.2f} points; {verdict(a_name, a, b_name, b)}."
    )


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
