"""Backbones: plain ``nn.Module``s, float (B, 1, 28, 28) in, logits (B, num_classes) out; a registry by name.

This file imports torch only (no Lightning), so a trained ``model.pth`` can be served with torch alone::

    from fashion_conv.backbones import load_backbone
    net = load_backbone("model.pth", "cnn")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

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


def load_backbone(path: str | Path, name: str, map_location: str | torch.device = "cpu", **kwargs) -> nn.Module:
    """Rebuild backbone ``name`` and load a ``model.pth`` state dict into it (``weights_only=True``), in eval mode."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated file, or a pickle that asks for code: refused, never run
        raise ValueError(f"{path}: not a loadable weights file ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    model = build_backbone(name, **kwargs)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: weights do not fit backbone {name!r}: {str(exc).splitlines()[0]}") from None
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
