"""Cheap image grids for TensorBoard: tensors to an RGB mosaic (3, H, W) with numpy colormaps, no figure rendering."""

from __future__ import annotations

import matplotlib
import torch

_CMAPS: dict[str, object] = {}


def colorize(values: torch.Tensor, cmap: str, signed: bool) -> torch.Tensor:
    """(h, w) -> RGB (3, h, w) in [0, 1]: signed maps on a symmetric scale around 0, others from min to max."""
    values = values.detach().float().cpu()
    if signed:
        limit = values.abs().max().clamp_min(1e-12)
        scaled = values / (2 * limit) + 0.5
    else:
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low).clamp_min(1e-12)
    colormap = _CMAPS.setdefault(cmap, matplotlib.colormaps[cmap])
    return torch.from_numpy(colormap(scaled.numpy())[..., :3]).permute(2, 0, 1).float()


def overlay(image: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A signed attribution (h, w) in red/blue over the gray image (h, w): RGB (3, h, w)."""
    return 0.35 * image.detach().float().cpu().expand(3, -1, -1) + 0.65 * colorize(values, "bwr", signed=True)


def mosaic(panels: list[list[torch.Tensor]], pad: int = 2, min_side: int = 56) -> torch.Tensor:
    """Rows of RGB panels (3, h, w), each upsampled (nearest) to the largest panel, at least ``min_side`` (legible
    in TensorBoard, which shows images at their own size), with white gaps: (3, H, W)."""
    side = max(min_side, *(p.shape[-1] for row in panels for p in row))
    cols = max(len(row) for row in panels)
    out = torch.ones(3, len(panels) * (side + pad) + pad, cols * (side + pad) + pad)
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            if panel.shape[-1] != side:
                panel = torch.nn.functional.interpolate(panel[None], size=(side, side), mode="nearest")[0]
            top, left = pad + r * (side + pad), pad + c * (side + pad)
            out[:, top : top + side, left : left + side] = panel
    return out
