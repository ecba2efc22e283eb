"""fashion_conv: what convolutional layers do, on Fashion-MNIST, with PyTorch Lightning.

    from fashion_conv import FashionMNISTDataModule, FashionClassifier, build_backbone, list_backbones

Names are imported on first use, so ``import fashion_conv.models.backbones`` (torch only) does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "CLASS_NAMES": "data.classes",
    "DataError": "utils.errors",
    "FashionClassifier": "models.classifier",
    "FashionConvError": "utils.errors",
    "FashionMNISTDataModule": "data.datamodule",
    "build_backbone": "models.backbones",
    "count_parameters": "models.backbones",
    "list_backbones": "models.backbones",
    "load_backbone": "models.backbones",
    "register_backbone": "models.backbones",
}

__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # for IDEs and type checkers; at run time the names load lazily
    from fashion_conv.models.backbones import build_backbone, count_parameters, list_backbones, load_backbone, register_backbone
    from fashion_conv.data.classes import CLASS_NAMES
    from fashion_conv.data.datamodule import FashionMNISTDataModule
    from fashion_conv.utils.errors import DataError, FashionConvError
    from fashion_conv.models.classifier import FashionClassifier


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'fashion_conv' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fashion_conv.{_HOMES[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
