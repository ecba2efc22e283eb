"""Where a model looks, with Captum: Integrated Gradients (with its convergence delta), Occlusion, Layer Grad-CAM.

Every function takes a backbone in eval mode and images (B, 1, H, W) in [0, 1], and returns maps (B, H, W).
Captum is imported on first use: ``fit`` imports this package for its callback and should not pay for it at start.
"""

from __future__ import annotations

import torch
from torch import nn

from fashion_conv.research.explain.layers import last_conv


def integrated_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """IG from a black baseline (the background of Fashion-MNIST) to each image: maps (B, H, W) and deltas (B,).

    Completeness: a map sums to f(x)_t - f(0)_t; Captum's delta is the difference, a check of the integral.
    """
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    attr, delta = ig.attribute(
        images, baselines=torch.zeros_like(images), target=targets, n_steps=steps, method="gausslegendre", return_convergence_delta=True
    )
    return attr.detach().sum(1), delta.detach()


def completeness_gap(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """f(x)_t - f(0)_t per image (B,): what an IG map sums to, the scale to judge its delta against."""
    with torch.no_grad():
        rows = torch.arange(len(images))
        return model(images)[rows, targets] - model(torch.zeros_like(images))[rows, targets]


def completeness_rows(ig_maps: torch.Tensor, gap: torch.Tensor, delta: torch.Tensor) -> list[dict]:
    """Per image, IG's completeness check from its maps (B, H, W), the logit gaps (B,) and Captum's deltas (B,):
    rows {ig_sum, logit_gap, delta, relative_delta}, with relative_delta = |delta| / |gap| (a gap of 0 counts as 1e-12).
    """
    rows = []
    for ig, g, d in zip(ig_maps, gap.tolist(), delta.tolist()):
        rows.append({"ig_sum": ig.sum().item(), "logit_gap": g, "delta": d, "relative_delta": abs(d) / max(abs(g), 1e-12)})
    return rows


def occlusion(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, window: int = 4, stride: int = 2) -> torch.Tensor:
    """The drop in the target logit when a ``window`` x ``window`` black patch covers each place: maps (B, H, W)."""
    from captum.attr import Occlusion

    channels = images.shape[1]
    attr = Occlusion(model).attribute(
        images, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride), target=targets, baselines=0.0,
        perturbations_per_eval=32,  # 32 occluded copies of the batch per forward pass: fewer, larger calls
    )
    return attr.detach().sum(1)


def grad_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """Layer Grad-CAM on the last conv layer, upsampled to the image size: maps (B, H, W); ``None`` without a conv."""
    from captum.attr import LayerAttribution, LayerGradCam

    found = last_conv(model)
    if found is None:
        return None
    cam = LayerGradCam(model, found[1]).attribute(images, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cam.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear").sum(1)


def attribution_maps(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int = 64, window: int = 4, stride: int = 2
) -> dict[str, torch.Tensor]:
    """All methods for one model: {"integrated gradients", "occlusion", ["grad-cam"]} -> (B, H, W), plus "ig delta" (B,)."""
    ig, delta = integrated_gradients(model, images, targets, steps)
    maps = {"integrated gradients": ig, "occlusion": occlusion(model, images, targets, window, stride)}
    cam = grad_cam(model, images, targets)
    if cam is not None:
        maps["grad-cam"] = cam
    maps["ig delta"] = delta
    return maps
