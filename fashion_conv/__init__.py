"""fashion_conv: what convolutional layers do, on Fashion-MNIST, with PyTorch Lightning.

    from fashion_conv import FashionMNISTDataModule, FashionClassifier, build_backbone, list_backbones
"""

from fashion_conv.backbones import build_backbone, count_parameters, list_backbones, load_backbone, register_backbone
from fashion_conv.datamodule import CLASS_NAMES, FashionMNISTDataModule
from fashion_conv.errors import DataError, FashionConvError
from fashion_conv.module import FashionClassifier

__all__ = [
    "CLASS_NAMES",
    "DataError",
    "FashionClassifier",
    "FashionConvError",
    "FashionMNISTDataModule",
    "build_backbone",
    "count_parameters",
    "list_backbones",
    "load_backbone",
    "register_backbone",
]
