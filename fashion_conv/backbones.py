"""Backbones: plain ``nn.Module``s, float (B, 1, 28, 28) in, logits (B, num_classes) out; a registry by name.

This file imports torch only (no Lightning), so a trained ``model.pth`` can be served with torch alone::

    from fashion_conv.backbones import load_backbone
    net = load_backbone("model.pth", "cnn")
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fashion_conv.errors import FashionConvError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


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


def build_backbone(name: str, **kwargs) -> nn.Module:
    """A registered backbone by name (``mlp``, ``cnn``, ``cnn5``), or any class by import path (``pkg.mod.Net``)."""
    if name in _REGISTRY:
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_backbone(path: str | Path, name: str, **kwargs) -> nn.Module:
    """Rebuild backbone ``name`` from a ``model.pth`` state dict (``weights_only=True``), in eval mode, on CPU."""
    return into_backbone(read_weights_file(path), name, kwargs, path)


def read_weights_file(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU, with errors a person can act on."""
    path = Path(path)
    if not path.exists():
        raise FashionConvError(f"{path}: no such file")
    if path.is_dir():
        raise FashionConvError(f"{path}: is a folder, expected a .ckpt or .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise FashionConvError(f"{path}: not readable (permission denied)") from None
    except Exception as exc:  # torch reports bad files with many exception types
        blocked = re.search(r"GLOBAL (\S+)", str(exc))
        if blocked:
            raise FashionConvError(
                f"{path}: refused: loading it would run Python code ({blocked.group(1)}), so it is not plain weights; "
                "fashion_conv loads tensors only (torch.load weights_only=True)"
            ) from None
        raise FashionConvError(f"{path}: not a PyTorch weights file, or a damaged one ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise FashionConvError(f"{path}: holds a {type(state).__name__}, expected a state dict or a Lightning checkpoint")
    return state


def into_backbone(state: dict, name: str, kwargs: dict, path: str | Path) -> nn.Module:
    """Build backbone ``name`` and load ``state`` into it, in eval mode; a mismatch is one clear error."""
    try:
        model = build_backbone(name, **kwargs)
    except (ValueError, TypeError) as exc:
        raise FashionConvError(f"{path}: cannot build backbone {name!r}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        missing = len(set(model.state_dict()) - set(state))
        unexpected = len(set(state) - set(model.state_dict()))
        detail = f"{missing} tensors missing, {unexpected} unexpected" if missing or unexpected else "tensor shapes differ"
        raise FashionConvError(
            f"{path}: weights do not fit backbone {name!r} ({detail}); was it trained with another backbone or options?"
        ) from None
    return model.eval()


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
