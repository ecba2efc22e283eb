"""Backbones: plain ``nn.Module``s, float (B, 1, 28, 28) in, logits (B, num_classes) out; a registry by name.

This file imports torch only (no Lightning), so a trained ``model.pth`` can be served with torch alone::

    from fashion_conv.models.backbones import load_backbone
    net = load_backbone("model.pth", "cnn")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights, 200x the largest backbone here


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class or function decorator that adds a backbone under ``name``; a duplicate name is refused."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a backbone named {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return wrap


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone_builder(name: str) -> Callable[..., nn.Module]:
    """The class or function registered under ``name``; ``ValueError`` for a name that is not registered."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")
    return _REGISTRY[name]


def build_backbone(name: str, **kwargs) -> nn.Module:
    """A registered backbone by name (``mlp``, ``cnn``, ``cnn5``), or any class by import path (``pkg.mod.Net``)."""
    if name in _REGISTRY:
        check_backbone_kwargs(name, kwargs)
        return _REGISTRY[name](**kwargs)
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import backbone class {name!r}: {exc}") from None
        # A checkpoint's hyperparameters name this path: call nothing but an nn.Module class (never os.system).
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"backbone {name!r} is not an nn.Module class")
        return cls(**kwargs)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())} or give a class path like my_pkg.nets.MyNet")


def check_backbone_kwargs(name: str, kwargs: dict) -> None:
    """Refuse kwargs for registered backbone ``name`` that are not plain values, or that build a broken or
    oversized network: it is built on the meta device first (shapes only, no memory), so a checkpoint's
    ``{"hidden": 500000}`` fails here instead of allocating gigabytes."""
    for key, value in kwargs.items():
        plain = isinstance(value, (bool, int, float, str)) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
        if not plain:
            raise ValueError(f"backbone_kwargs {key!r} is a {type(value).__name__}; expected a number, string or list of integers")
    try:
        with torch.device("meta"):
            params = count_parameters(_REGISTRY[name](**kwargs))
    except (RuntimeError, OverflowError) as exc:
        raise ValueError(f"{name} with {kwargs}: {str(exc).splitlines()[0]}") from None
    if params > MAX_PARAMETERS:
        raise ValueError(f"{name} with {kwargs} has {params:,} parameters, more than the {MAX_PARAMETERS:,} allowed")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_backbone(path: str | Path, name: str, **kwargs) -> nn.Module:
    """Rebuild backbone ``name`` from a ``model.pth`` state dict (``weights_only=True``), in eval mode, on CPU."""
    from fashion_conv.models.weights import load_backbone as load  # reading files lives in weights.py

    return load(path, name, **kwargs)


@register_backbone("mlp")
class MLP(nn.Module):
    """The notebook's fully connected baseline: 784 -> 256 -> ReLU -> 10 (203,530 parameters)."""

    def __init__(self, hidden: int = 256, num_classes: int = 10):
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # (B, 1, 28, 28) -> (B, 784) -> (B, num_classes)


@register_backbone("cnn")
class CNN(nn.Module):
    """The notebook's CNN: two 3x3 conv + ReLU + 2x2 max-pool blocks (32, 64 channels), FC 3136 -> 128 -> 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 64, 7, 7)
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


@register_backbone("cnn5")
class CNN5(nn.Module):
    """The notebook's 5x5 variant: one 5x5 conv (32 channels) + ReLU + 2x2 max-pool, FC 6272 -> 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2))  # (B, 32, 14, 14)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(32 * 14 * 14, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


@register_backbone("convnet")
class ConvNet(nn.Module):
    """A configurable CNN for controlled ablations; the defaults build exactly ``cnn`` (421,642 parameters).

    One block per entry of ``channels``: a ``kernel_size`` x ``kernel_size`` conv with 'same' padding, ReLU and a
    2x2 pool (``pooling``: ``max``, ``avg`` or ``none``). Then FC -> ``hidden`` -> ReLU -> classes, or straight to the
    classes when ``hidden`` is 0. 'Same' padding keeps the feature maps, and so the FC head, independent of the
    kernel size: changing only ``kernel_size`` changes only the conv weights.
    """

    def __init__(
        self,
        kernel_size: int = 3,
        channels: tuple[int, ...] | list[int] = (32, 64),
        pooling: str = "max",
        hidden: int = 128,
        num_classes: int = 10,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive ('same' padding), got {kernel_size}")
        pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "none": None}
        if pooling not in pools:
            raise ValueError(f"pooling must be one of {', '.join(pools)}, got {pooling!r}")
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive counts, got {channels!r}")
        layers: list[nn.Module] = []
        in_channels, size = 1, 28
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            if pools[pooling] is not None:
                layers.append(pools[pooling](2))
                size //= 2  # (B, C, size, size) after this block
            in_channels = out_channels
        self.conv = nn.Sequential(*layers)
        features = in_channels * size * size
        head = [nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)] if hidden else [nn.Linear(features, num_classes)]
        self.fc = nn.Sequential(nn.Flatten(), *head)  # (B, C, size, size) -> (B, C*size*size) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))
