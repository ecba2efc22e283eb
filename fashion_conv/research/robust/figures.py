"""The report's figures (matplotlib, PNG), drawn from the measurement tables (pandas DataFrames)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from fashion_conv.research.robust.corruptions import FAMILIES, corrupt  # noqa: E402
from fashion_conv.utils.atomic import atomic_path  # noqa: E402


def save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def samples(images: torch.Tensor, path: Path, seed: int = 0) -> None:
    """One test image under every family at every severity (columns: clean, 1..5)."""
    fig, axes = plt.subplots(len(FAMILIES), 6, figsize=(6, 0.95 * len(FAMILIES)))
    for row, family in enumerate(FAMILIES):
        for col in range(6):
            ax = axes[row, col]
            ax.set_xticks([]), ax.set_yticks([])
            if col <= len(FAMILIES[family].levels):
                ax.imshow(corrupt(images[:1], family, col, seed)[0, 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[row, 0].set_ylabel(family, rotation=0, ha="right", va="center", fontsize=7)
    for col in range(6):
        axes[0, col].set_title("clean" if col == 0 else f"s{col}", fontsize=7)
    save(fig, path)


def family_bars(corr: pd.DataFrame, path: Path) -> None:
    """Accuracy per family (mean over severities, then over seeds; bars: min-max over seeds), one bar per model group."""
    per_seed = corr[corr.severity > 0].groupby(["group", "model", "family"], sort=False).accuracy.mean().reset_index()
    stats = per_seed.groupby(["family", "group"], sort=False).accuracy.agg(["mean", "min", "max"]).reset_index()
    families, groups = list(dict.fromkeys(stats.family)), list(dict.fromkeys(stats.group))
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / len(groups)
    for i, g in enumerate(groups):
        s = stats[stats.group == g].set_index("family").loc[families]
        xs = [k + i * width for k in range(len(families))]
        ax.bar(xs, 100 * s["mean"], width, label=g, yerr=[100 * (s["mean"] - s["min"]), 100 * (s["max"] - s["mean"])], capsize=1.5)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(families))], families, rotation=60, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy under each corruption (mean over severities; bars: range over seeds)")
    ax.legend(fontsize=8)
    save(fig, path)


def severity_lines(corr: pd.DataFrame, path: Path) -> None:
    """Accuracy against severity, mean over the graded families, one line per model group (range over seeds shaded)."""
    graded = [f for f, fam in FAMILIES.items() if len(fam.levels) > 1]
    sub = corr[corr.family.isin(graded) | (corr.severity == 0)]
    per_seed = sub.groupby(["group", "model", "severity"], sort=False).accuracy.mean().reset_index()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for g, rows in per_seed.groupby("group", sort=False):
        s = rows.groupby("severity").accuracy.agg(["mean", "min", "max"])
        ax.plot(s.index, 100 * s["mean"], marker="o", label=g)
        ax.fill_between(s.index, 100 * s["min"], 100 * s["max"], alpha=0.2)
    ax.set_xlabel("severity (0: clean)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Mean over {len(graded)} graded families")
    ax.legend(fontsize=8)
    save(fig, path)


def attack_curves(adv: pd.DataFrame, path: Path) -> None:
    """Accuracy against eps, FGSM dashed and PGD solid, one colour per group, a line per seed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = dict(zip(dict.fromkeys(adv.group), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (g, model, attack), rows in adv.groupby(["group", "model", "attack"], sort=False):
        first = model == adv[adv.group == g].model.iloc[0]
        ax.plot(rows.eps, 100 * rows.accuracy, "--" if attack == "fgsm" else "-", color=colours[g], marker=".",
                label=f"{g} {attack.upper()}" if first else None, alpha=0.8)  # fmt: skip
    ax.set_xlabel("eps (L-inf, pixels in [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy under attack (dashed FGSM, solid PGD-40; a line per seed)")
    ax.legend(fontsize=7)
    save(fig, path)


def reliability(rel: pd.DataFrame, path: Path) -> None:
    """Reliability diagrams of each group's first model, clean test (top) and corrupted test (bottom), before and after
    temperature scaling; a marker's area is proportional to its bin's share of the images."""
    groups = list(dict.fromkeys(rel.group))
    fig, axes = plt.subplots(2, len(groups), figsize=(3.2 * len(groups), 6.4), squeeze=False)
    for col, g in enumerate(groups):
        first = rel[rel.group == g].model.iloc[0]
        for row, data in enumerate(("test", "corrupted test")):
            ax = axes[row, col]
            for scaled, colour in (("before", "C0"), ("after", "C1")):
                rows = rel[(rel.model == first) & (rel.data == data) & (rel.scaled == scaled)]
                ax.plot(rows.confidence, rows.accuracy, "-", color=colour, lw=0.8, label=f"{scaled} T")
                ax.scatter(rows.confidence, rows.accuracy, s=400 * rows.n / rows.n.sum(), color=colour)
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
            ax.set_title(f"{g}, {data}", fontsize=9)
            ax.set_xlim(0, 1), ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
        axes[0, 0].set_ylabel("accuracy")
        axes[1, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
