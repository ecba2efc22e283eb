"""Loading a trained backbone for explaining: the one place that reads model files (tensors only)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fashion_conv.models.backbones import build_backbone, list_backbones
from fashion_conv.models.weights import load_model


def load_trained(checkpoint: str | Path | None = None, weights: str | Path | None = None, backbone: str | None = None) -> tuple[nn.Module, str]:
    """The backbone in eval mode and its name, from a Lightning checkpoint or a ``model.pth`` with its backbone name.

    Files load with ``torch.load(weights_only=True)`` (``fashion_conv.models.weights.load_model``); problems raise
    ``FashionConvError`` with one line a person can act on.
    """
    model = load_model(checkpoint=checkpoint, weights=weights, backbone=backbone)
    return model, backbone or registered_name(model)


def registered_name(model: nn.Module) -> str:
    """The registry name whose class built ``model`` (``cnn``, ...), else the class's name."""
    for name in list_backbones():
        if type(build_backbone(name)) is type(model):
            return name
    return type(model).__name__
