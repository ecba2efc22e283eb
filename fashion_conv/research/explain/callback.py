"""``ExplainFigures``: at the end of ``fit``, the run's filters, feature maps and attributions in TensorBoard's IMAGES tab."""

from __future__ import annotations

import time

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from fashion_conv.utils.errors import FashionConvError
from fashion_conv.research.explain.attributions import attribution_maps
from fashion_conv.research.explain.filters import first_layer_filters
from fashion_conv.research.explain.layers import block_outputs, feature_maps, layer_labels, most_active_channels, spatial_layers
from fashion_conv.research.explain.tiles import colorize, mosaic, overlay


class ExplainFigures(Callback):
    """Once per run, after the last epoch: ``explain/filters``, ``explain/feature_maps/<layer>`` (rows: the first test
    image of each class; columns: the layer's most active channels) and ``explain/attributions`` (columns: image,
    Integrated Gradients, Occlusion, Grad-CAM for conv backbones), plus ``explain/seconds``, what it cost.

    Cheap by design: 10 images, ``ig_steps`` IG steps, a coarse occlusion grid, mosaics made from tensors.
    """

    def __init__(self, enabled: bool = True, ig_steps: int = 16, occlusion_window: int = 7, channels: int = 8):
        self.enabled, self.ig_steps, self.occlusion_window, self.channels = enabled, ig_steps, occlusion_window, channels

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if not self.enabled or writer is None or not trainer.is_global_zero:
            return
        found = fixed_images(trainer.datamodule)
        if found is None:
            return
        start = time.perf_counter()
        model: nn.Module = getattr(pl_module, "backbone", pl_module)
        was_training = model.training
        model.eval()
        try:
            x, y = (t.to(pl_module.device) for t in found)
            for tag, image in explain_images(model, x, y, self.ig_steps, self.occlusion_window, self.channels).items():
                writer.add_image(tag, image, global_step=trainer.global_step)
        finally:
            model.train(was_training)
        writer.add_scalar("explain/seconds", time.perf_counter() - start, global_step=trainer.global_step)


def fixed_images(data) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first test image of each class (validation images when no test set can be loaded): (10, 1, 28, 28), (10,)."""
    if data is None:
        return None
    if getattr(data, "test_set", None) is None and hasattr(data, "setup"):
        try:
            data.setup("test")  # loads the test CSV (cached), which trainer.test then reuses
        except FashionConvError:
            pass  # no test set: the figures use validation images; a missing file is reported when testing
    dataset = getattr(data, "test_set", None) or getattr(data, "val_set", None)
    if dataset is None or not hasattr(dataset, "labels"):
        return None
    idx = [int(torch.nonzero(dataset.labels == c)[0, 0]) for c in torch.unique(dataset.labels).tolist()]
    return dataset.images[idx].float().div(255).cpu(), dataset.labels[idx].cpu()


def explain_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ig_steps: int = 16, window: int = 7, channels: int = 8) -> dict[str, torch.Tensor]:
    """Tag -> RGB mosaic (3, H, W) for a backbone in eval mode and images ``x`` (B, 1, 28, 28) with labels ``y``."""
    filters, _ = first_layer_filters(model)
    images = {"explain/filters": mosaic([[colorize(f, "bwr", signed=True) for f in filters[r : r + 8]] for r in range(0, len(filters), 8)])}
    layers = spatial_layers(model, x[:1])
    labels = layer_labels(layers)
    for name, fmap in feature_maps(model, x, [layer.name for layer in block_outputs(layers)]).items():
        top = most_active_channels(fmap, channels)
        rows = [[colorize(x[i, 0], "gray", False)] + [colorize(fmap[i, c], "viridis", False) for c in top] for i in range(len(x))]
        images[f"explain/feature_maps/{labels[name]}"] = mosaic(rows)
    maps = attribution_maps(model, x, y, steps=ig_steps, window=window, stride=window)
    maps.pop("ig delta")
    images["explain/attributions"] = mosaic([[colorize(x[i, 0], "gray", False)] + [overlay(x[i, 0], m[i]) for m in maps.values()] for i in range(len(x))])
    return images
