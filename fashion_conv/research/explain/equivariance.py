"""Layer-by-layer translation equivariance: does shifting the input shift each layer's output, scaled by its stride?

For a layer f with cumulative stride S and an input shift of s pixels, compare f(shift(x, s)) with
shift(f(x), s / S). When S does not divide s the map can only move by a whole step: the error is measured for
floor(s / S) and ceil(s / S) and the smaller mean is reported (floor on a tie). With a zero-fill shift, the
positions the shift filled in and those whose receptive field reaches the image border are not compared, for both
candidates alike, so it measures equivariance away from the borders; a circular shift compares every position.
The logits are compared unshifted: invariance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fashion_conv.research.explain.layers import feature_maps, layer_labels, spatial_layers

LOGITS = "logits"


def shift(x: torch.Tensor, dy: int, dx: int, circular: bool = False) -> torch.Tensor:
    """(..., H, W) moved by (dy, dx) pixels (down, right); zero-filled, or wrapped around when ``circular``."""
    if circular:
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def _valid(h: int, w: int, dy: int, dx: int, margin: tuple[int, int] = (0, 0)) -> tuple[slice, slice]:
    """The rows and columns of a (h, w) map that a (dy, dx) zero-fill shift did not fill in, less ``margin`` (rows,
    columns) positions at both ends: units whose receptive field reaches the border see zero padding in one map
    and image (or the filled-in zeros, which deeper layers do not map to zero) in the other."""
    my, mx = margin
    return slice(max(dy, 0) + my, h + min(dy, 0) - my), slice(max(dx, 0) + mx, w + min(dx, 0) - mx)


def relative_error(
    shifted_out: torch.Tensor, out: torch.Tensor, dy: int, dx: int, circular: bool, margin: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Per image ||f(Tx) - T'f(x)|| / ||T'f(x)|| over the valid region; (B,). Tensors (B, C, H, W) or (B, K).

    T' moves the map by (dy, dx); ``margin`` (rows, columns) positions are left out at both ends of each axis (with a
    zero fill). ``equivariance_errors`` sets it on the axis the input moved along, also where T' moves by 0.
    """
    if out.dim() == 4:
        expected = shift(out, dy, dx, circular)
        if not circular:
            rows, cols = _valid(*out.shape[-2:], dy, dx, margin)
            expected, shifted_out = expected[..., rows, cols], shifted_out[..., rows, cols]
    else:
        expected = out
    diff = (shifted_out - expected).flatten(1).norm(dim=1)
    return diff / expected.flatten(1).norm(dim=1).clamp_min(1e-12)


def equivariance_errors(
    model: nn.Module, images: torch.Tensor, shifts: tuple[int, ...] = (1, 2, 3, 4), circular: bool = False
) -> list[dict]:
    """Rows {layer, label, kind, stride, receptive_field, shift, map_shift, mean, std, n, agreement} for every 4-D layer
    and the logits, for horizontal and vertical shifts of ``images`` (B, 1, H, W) (both directions pooled).

    ``agreement`` (logits only): the fraction of images whose predicted class the shift leaves unchanged.
    """
    layers = spatial_layers(model, images[:1])
    labels = layer_labels(layers)
    names = [layer.name for layer in layers]
    base = _outputs(model, images, names)
    rows = []
    for s in shifts:
        moved = {d: _outputs(model, shift(images, *d, circular), names) for d in ((0, s), (s, 0))}
        for layer in layers:
            best = None
            margin = math.ceil((layer.receptive_field - 1) / (2 * layer.stride))  # units whose field reaches a border
            for step in sorted({math.floor(s / layer.stride), math.ceil(s / layer.stride)}):
                errs = torch.cat([relative_error(moved[(0, s)][layer.name], base[layer.name], 0, step, circular, (0, margin)),
                                  relative_error(moved[(s, 0)][layer.name], base[layer.name], step, 0, circular, (margin, 0))])  # fmt: skip
                if best is None or errs.mean() < best[1].mean():
                    best = (step, errs)
            rows.append(_row(layer.name, labels[layer.name], layer.kind, layer.stride, layer.receptive_field, s, best[0], best[1]))
        if base[LOGITS].dim() != 2:
            continue  # the model's output is a map, not logits: its rows above say it all
        errs = torch.cat([relative_error(moved[d][LOGITS], base[LOGITS], 0, 0, circular) for d in moved])
        same = torch.cat([moved[d][LOGITS].argmax(1) == base[LOGITS].argmax(1) for d in moved])
        agreement = same.sum().item() / len(same)  # an exact fraction: its last digit rounds as the CSV's does
        rows.append(_row(LOGITS, LOGITS, "output", 0, images.shape[-1], s, 0, errs, agreement=agreement))
    return rows


def _outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    maps = feature_maps(model, x, names) if names else {}
    with torch.no_grad():
        maps[LOGITS] = model(x)
    return maps


def _row(layer, label, kind, stride, rf, s, step, errs: torch.Tensor, agreement: float | None = None) -> dict:
    return {
        "layer": layer, "label": label, "kind": kind, "stride": stride, "receptive_field": rf, "shift": s,
        "map_shift": step, "mean": errs.mean().item(), "std": errs.std().item() if len(errs) > 1 else 0.0,
        "n": len(errs), "agreement": agreement,
    }  # fmt: skip
