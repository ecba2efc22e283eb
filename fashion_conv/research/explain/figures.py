"""Matplotlib figures of the explain report: filters, feature maps, attributions, equivariance, mistakes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are saved, never shown
import matplotlib.pyplot as plt
import torch

from fashion_conv.data.csvio import CLASS_NAMES
from fashion_conv.research.explain.layers import most_active_channels


def _grid(n: int, cols: int, size: float = 1.0, title_room: float = 0.0):
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size + title_room), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def _signed(ax, values: torch.Tensor, image: torch.Tensor | None = None) -> None:
    """A signed map in red (positive) and blue (negative), symmetric around 0, over the gray image if given."""
    limit = values.abs().max().item() or 1.0
    if image is not None:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.imshow(values, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.65 if image is not None else 1.0)


def filters_figure(filters: torch.Tensor, title: str, cols: int = 8) -> plt.Figure:
    """One panel per filter (N, h, w), each on its own symmetric red-blue scale."""
    fig, axes = _grid(len(filters), cols, 0.9, 0.4)
    for i, (ax, f) in enumerate(zip(axes.flat, filters)):
        _signed(ax, f)
        ax.set_title(str(i), fontsize=6, pad=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def feature_maps_figure(images: torch.Tensor, labels: torch.Tensor, maps: dict[str, torch.Tensor], channels: int = 4) -> plt.Figure:
    """Rows: images (B, 1, H, W); columns: the input, then for each layer ``channels`` maps (the layer's most active
    channels over these images). ``maps``: label -> (B, C, h, w)."""
    cols = 1 + channels * len(maps)
    fig, axes = plt.subplots(len(images), cols, figsize=(cols * 0.75, len(images) * 0.8 + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    for r, (image, label) in enumerate(zip(images, labels)):
        axes[r, 0].imshow(image[0], cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(CLASS_NAMES[int(label)], fontsize=6, rotation=0, ha="right", va="center")
    col = 1
    for name, fmap in maps.items():
        for c in most_active_channels(fmap, channels):
            for r in range(len(images)):
                axes[r, col].imshow(fmap[r, c], cmap="viridis")
            axes[0, col].set_title(f"{name}\nch {c} ({fmap.shape[-1]}x{fmap.shape[-2]})", fontsize=5)
            col += 1
    fig.tight_layout(pad=0.3)
    return fig


def attribution_figure(images: torch.Tensor, labels: torch.Tensor, maps: dict[str, dict[str, torch.Tensor]], row_titles: list[str] | None = None) -> plt.Figure:
    """Rows: images; columns: the input, then each model's methods. ``maps``: model -> method -> (B, H, W)."""
    columns = [(model, method) for model, methods in maps.items() for method in methods]
    cols = 1 + len(columns)
    fig, axes = plt.subplots(len(images), cols, figsize=(cols * 1.0, len(images) * 1.0 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    for r, image in enumerate(images):
        axes[r, 0].imshow(image[0], cmap="gray", vmin=0, vmax=1)
        title = row_titles[r] if row_titles else CLASS_NAMES[int(labels[r])]
        axes[r, 0].set_ylabel(title, fontsize=6, rotation=0, ha="right", va="center")
        for c, (model, method) in enumerate(columns, start=1):
            _signed(axes[r, c], maps[model][method][r], image[0])
    axes[0, 0].set_title("image", fontsize=6)
    for c, (model, method) in enumerate(columns, start=1):
        axes[0, c].set_title(f"{model}\n{method}", fontsize=6)
    fig.tight_layout(pad=0.3)
    return fig


def equivariance_figure(rows_by_model: dict[str, list[dict]]) -> plt.Figure:
    """One panel per model: relative equivariance error (mean ± std over images) against the shift, a line per layer."""
    n = len(rows_by_model)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for ax, (model, rows) in zip(axes[0], rows_by_model.items()):
        for label in dict.fromkeys(r["label"] for r in rows):
            mine = [r for r in rows if r["label"] == label]
            ax.errorbar([r["shift"] for r in mine], [r["mean"] for r in mine], yerr=[r["std"] for r in mine],
                        marker="o", capsize=3, label=label, lw=2.5 if label == "logits" else 1.2)  # fmt: skip
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("input shift (pixels)")
        ax.set_xticks(sorted({r["shift"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("relative error ||f(Tx) - T'f(x)|| / ||T'f(x)||")
    fig.tight_layout()
    return fig


def receptive_field_figure(layers_by_model: dict[str, list[tuple[str, int]]], image_size: int = 28) -> plt.Figure:
    """Bars: the theoretical receptive field (pixels per side) of each layer, against the image size."""
    fig, ax = plt.subplots(figsize=(7, 3))
    x = 0
    ticks = []
    for model, layers in layers_by_model.items():
        for label, rf in layers:
            ax.bar(x, rf, color=f"C{list(layers_by_model).index(model)}")
            ticks.append((x, f"{model}\n{label}"))
            x += 1
        x += 0.5
    ax.axhline(image_size, color="gray", ls="--", lw=1, label=f"image ({image_size} px)")
    ax.set_xticks([t for t, _ in ticks], [s for _, s in ticks], fontsize=6)
    ax.set_ylabel("receptive field (px per side)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
