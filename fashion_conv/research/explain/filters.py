"""First-layer weights as pictures: conv kernels (k x k), or an MLP's first-layer rows as input-sized templates."""

from __future__ import annotations

import math

import torch
from torch import nn

from fashion_conv.research.explain.layers import first_layer


def first_layer_filters(model: nn.Module, image_size: tuple[int, int] = (28, 28), limit: int = 32) -> tuple[torch.Tensor, str]:
    """Up to ``limit`` filters (N, h, w) of the first layer, and what they are ("conv 3x3", "linear rows").

    Conv kernels come in channel order (summed over input channels); a Linear layer's rows are reshaped to
    ``image_size`` and the ``limit`` rows with the largest norm are kept (the templates the layer relies on most).
    """
    layer = first_layer(model)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer")
    weight = layer.weight.detach().float().cpu()
    if isinstance(layer, nn.Conv2d):
        kernels = weight.sum(1)[:limit]  # (out, in, k, k) -> (N, k, k)
        return kernels, f"conv {kernels.shape[-2]}x{kernels.shape[-1]}"
    if weight.shape[1] != math.prod(image_size):
        raise ValueError(f"first Linear layer takes {weight.shape[1]} inputs, not an image of {image_size[0]}x{image_size[1]}")
    keep = weight.norm(dim=1).argsort(descending=True)[:limit]
    return weight[keep].reshape(-1, *image_size), "linear rows"
