"""The report's figures (matplotlib, Agg): training curves, accuracy against a swept setting, bars, a scatter."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

_PALETTE = plt.get_cmap("tab10").colors


def colors(labels: list[str]) -> dict[str, tuple]:
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finish_accuracy(fig: plt.Figure, ax: plt.Axes, path: Path, title: str, grid: str = "both", **legend) -> None:
    """The test-accuracy figures' common end: y label, title, grid, legend (``legend``: its keywords), saved."""
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(axis=grid, alpha=0.3)
    ax.legend(**legend)
    _save(fig, path)


def curves(curves_df: pd.DataFrame, labels: list[str], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train and validation, one line per run (colour: variant, style: seed)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    panels = [
        ("train_loss", "training loss"),
        ("val_loss", "validation loss"),
        ("train_acc", "training accuracy"),
        ("val_acc", "validation accuracy"),
    ]
    styles = ["-", "--", ":", "-."]
    color = colors(labels)
    for ax, (column, name) in zip(axes.flat, panels):
        for label in labels:
            runs = curves_df[curves_df["variant"] == label]
            for i, (seed, run) in enumerate(runs.groupby("seed")):
                ax.plot(run["epoch"] + 1, run[column], styles[i % len(styles)], marker="o", ms=3, color=color[label],
                        label=f"{label} seed {seed}")  # fmt: skip
        ax.set_title(name)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    _save(fig, path)


def lines(
    series: dict[str, tuple[list, list, list]], path: Path, xlabel: str, title: str, logx: bool = False,
    notes: dict[str, list[str]] | None = None, references: dict[str, float] | None = None,
) -> None:  # fmt: skip
    """Test accuracy (%) against a swept setting: per series (x, mean, std), mean line with a ±std band.

    ``notes``: a text per point of a series; ``references``: labelled horizontal lines (accuracy in [0, 1]).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    color = colors(list(series) + list(references or {}))
    for label, (x, mean, std) in series.items():
        x, mean, std = np.asarray(x), 100 * np.asarray(mean), 100 * np.nan_to_num(np.asarray(std, dtype=float))
        ax.plot(x, mean, "-o", color=color[label], label=label)
        ax.fill_between(x, np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100), color=color[label], alpha=0.2)
        for xi, yi, note in zip(x, mean, (notes or {}).get(label, [])):
            ax.annotate(note, (xi, yi), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    for label, value in (references or {}).items():
        ax.axhline(100 * value, ls="--", lw=1, color=color[label], label=label)
    ax.margins(x=0.08)  # room for the notes at both ends
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted({v for x, _, _ in series.values() for v in x}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel(xlabel)
    _finish_accuracy(fig, ax, path, title)


def bars(groups: list[str], series: dict[str, tuple[list, list]], path: Path, title: str) -> None:
    """Grouped bars of test accuracy (%): one group per model, one bar per series (mean, std error bar)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = 0.8 / len(series)
    color = colors(list(series))
    lowest, highest = 100.0, 0.0
    for i, (name, (mean, std)) in enumerate(series.items()):
        x = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        mean, std = 100 * np.asarray(mean), 100 * np.nan_to_num(np.asarray(std, dtype=float))
        ax.bar(x, mean, width, yerr=std, capsize=4, color=color[name], label=name)
        for xi, m, s in zip(x, mean, std):
            ax.text(xi, m + s, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
        lowest, highest = min(lowest, float(np.nanmin(mean))), max(highest, float(np.nanmax(mean + std)))
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylim(max(0.0, lowest - 10), min(100.0, highest) + 4)  # zoom on the range where the bars differ
    _finish_accuracy(fig, ax, path, title, grid="y", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(series))


def scatter(points: pd.DataFrame, path: Path, title: str) -> None:
    """Test accuracy (%) against parameters (log scale); ``points`` has label, family, params, mean, std."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    color = colors(sorted(points["family"].unique()))
    for family, group in points.groupby("family"):
        group = group.sort_values("params")
        ax.errorbar(group["params"], 100 * group["mean"], yerr=100 * group["std"].fillna(0), fmt="o", capsize=4,
                    color=color[family], label=family)  # fmt: skip
        for _, p in group.iterrows():
            ax.annotate(
                p["label"], (p["params"], 100 * p["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters (log scale)")
    _finish_accuracy(fig, ax, path, title)
