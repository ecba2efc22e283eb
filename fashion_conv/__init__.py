"""fashion_conv: what convolutional layers do, on Fashion-MNIST, with PyTorch Lightning.

    from fashion_conv import FashionMNISTDataModule, FashionClassifier, build_backbone, list_backbones

Names are imported on first use, so ``import fashion_conv.backbones`` (torch only) does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "CLASS_NAMES": "classes",
    "DataError": "errors",
    "FashionClassifier": "module",
    "FashionConvError": "errors",
    "FashionMNISTDataModule": "datamodule",
    "build_backbone": "backbones",
    "count_parameters": "backbones",
    "list_backbones": "backbones",
    "load_backbone": "backbones",
    "register_backbone": "backbones",
}

__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # for IDEs and type checkers; at run time the names load lazily
    from fashion_conv.backbones import build_backbone, count_parameters, list_backbones, load_backbone, register_backbone
    from fashion_conv.classes import CLASS_NAMES
    from fashion_conv.datamodule import FashionMNISTDataModule
    from fashion_conv.errors import DataError, FashionConvError
    from fashion_conv.module import FashionClassifier


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'fashion_conv' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fashion_conv.{_HOMES[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
