"""Probes of a trained model's inductive bias: test accuracy on shifted images. (The pixel permutation lives in
the DataModule, ``pixel_permutation_seed``, since it applies to training as well.)"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from fashion_conv.data.augment import shift
from fashion_conv.research.experiments.plans import Conditions

# Every shift by k moves the image k pixels along both axes, in each of the four diagonal directions; the
# accuracy at k is the mean over the four, so a model is not favoured by where objects sit in the frame.
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1))


def shifted_copies(images: torch.Tensor, k: int) -> torch.Tensor:
    """(4N, ...): ``images`` shifted by k pixels on both axes in each diagonal direction (N images at k=0)."""
    if k == 0:
        return images
    n = len(images)
    return torch.cat([shift(images, torch.full((n,), sy * k), torch.full((n,), sx * k)) for sx, sy in DIRECTIONS])


def shift_accuracy(
    model: L.LightningModule,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_shift: int,
    cond: Conditions,
    batch_size: int,
) -> list[float]:
    """Test accuracy of ``model`` (its current weights) at shifts 0, 1, ..., max_shift, with the run's precision and device."""
    trainer = L.Trainer(
        accelerator=cond.accelerator, devices=1, precision=cond.precision, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    accuracies = []
    for k in range(max_shift + 1):
        x = shifted_copies(images, k)
        y = labels.repeat(len(x) // len(labels))
        loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
        accuracies.append(trainer.test(model, dataloaders=loader, verbose=False)[0]["test/acc"])
    return accuracies
