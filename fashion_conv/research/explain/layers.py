"""The spatial layers of any backbone, in the order they run: feature maps by forward hooks, strides, receptive fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity)


@dataclass(frozen=True)
class LayerInfo:
    """One leaf module with a (B, C, H, W) output: its stride from the input and its theoretical receptive field."""

    name: str  # the module's name in model.named_modules(), e.g. "conv.0"
    kind: str  # "conv", "pool", "relu", ... (lower-cased class name, shortened for Conv2d and pools)
    channels: int
    size: int  # output height (H); the inputs are square
    stride: int  # cumulative stride: one output step is this many input pixels
    receptive_field: int  # side of the input square one output unit sees (theoretical)


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return "pool"
    return type(module).__name__.lower()


def _pair(value) -> int:
    """The first of a kernel/stride/dilation setting (square kernels assumed, as in every backbone here)."""
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[LayerInfo]:
    """Every leaf module whose output is 4-D, in execution order, with stride and receptive field.

    ``x`` is one example batch (B, C, H, W). Receptive field: r_out = r_in + (k - 1) * d * jump_in, and
    jump_out = jump_in * s, for convs and pools; other 4-D layers are taken as pointwise (r and jump unchanged).
    """
    calls: list[tuple[str, nn.Module, tuple]] = []
    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children())]
    _forward_with_hooks(model, x, {m: lambda mod, _in, out: calls.append((names[mod], mod, tuple(out.shape))) for m in leaves})
    layers, rf, jump = [], 1, 1
    for name, module, shape in calls:
        if len(shape) != 4:
            continue
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
            d = _pair(getattr(module, "dilation", 1))
            rf, jump = rf + (k - 1) * d * jump, jump * s
        layers.append(LayerInfo(name, _kind(module), shape[1], shape[2], jump, rf))
    return layers


def first_layer(model: nn.Module) -> nn.Module | None:
    """The first Conv2d or Linear module that holds weights (the one that looks at the pixels)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return module
    return None


def last_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The last Conv2d (by registration order): the layer Grad-CAM looks at; ``None`` for a model without convs."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            found = (name, module)
    return found


def feature_maps(model: nn.Module, x: torch.Tensor, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The outputs of the named leaf modules (default: every 4-D one) for input ``x``, via forward hooks.

    Returns name -> tensor (B, C, H, W), in execution order, detached.
    """
    modules = dict(model.named_modules())
    if names is None:
        names = [layer.name for layer in spatial_layers(model, x[:1])]
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"no module named {', '.join(unknown)} in {type(model).__name__}")
    out: dict[str, torch.Tensor] = {}
    _forward_with_hooks(model, x, {modules[n]: lambda _m, _i, o, n=n: out.__setitem__(n, o.detach()) for n in names})
    return out


def most_active_channels(fmap: torch.Tensor, k: int) -> list[int]:
    """The ``k`` channels of ``fmap`` (B, C, H, W) with the largest mean over images and positions, largest first."""
    return fmap.mean(dim=(0, 2, 3)).argsort(descending=True)[:k].tolist()


def _forward_with_hooks(model: nn.Module, x: torch.Tensor, hooks: dict[nn.Module, Callable]) -> None:
    """One no-grad forward pass of ``x`` with a forward hook on each given module, removed afterwards."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()


def block_outputs(layers: list[LayerInfo]) -> list[LayerInfo]:
    """The layers worth a picture: each conv block after its nonlinearity, and each pool.

    A conv (or BatchNorm) immediately followed by a pointwise layer is shown after that layer instead.
    """
    shown = []
    for i, layer in enumerate(layers):
        following = layers[i + 1] if i + 1 < len(layers) else None
        if layer.kind in ("conv", "batchnorm2d") and following is not None and following.kind not in ("conv", "pool"):
            continue  # its activation (next) is the block's output
        if layer.kind.startswith("dropout") or layer.kind == "identity":
            continue
        shown.append(layer)
    return shown


def layer_labels(layers: list[LayerInfo]) -> dict[str, str]:
    """Short labels for tables and figures: conv1, conv1+relu, pool1, conv2, ... keyed by module name."""
    labels, convs, pools, last = {}, 0, 0, ""
    for layer in layers:
        if layer.kind == "conv":
            convs += 1
            last = labels[layer.name] = f"conv{convs}"
        elif layer.kind == "pool":
            pools += 1
            last = labels[layer.name] = f"pool{pools}"
        else:
            last = labels[layer.name] = f"{last}+{layer.kind}" if last else layer.kind
    return labels
