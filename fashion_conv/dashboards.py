"""TensorBoard extras: labelled sample images and class counts at fit start, a test confusion matrix at test end."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to TensorBoard, never shown
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from fashion_conv.csvio import CLASS_NAMES


def _writer(trainer: Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def sample_grid(images: torch.Tensor, labels: torch.Tensor, n: int = 32) -> plt.Figure:
    """The notebook's ``show_samples``: the first ``n`` images with their class names."""
    cols = 8
    rows = -(-min(n, len(images)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, label in zip(axes.flat, images[:n], labels[:n]):
        ax.imshow(img.squeeze(0), cmap="gray", vmin=0, vmax=255)
        ax.set_title(CLASS_NAMES[int(label)], fontsize=7)
    fig.tight_layout()
    return fig


def class_counts_figure(labels: torch.Tensor, title: str) -> plt.Figure:
    """The notebook's ``value_counts``, as a bar chart."""
    counts = torch.bincount(labels, minlength=len(CLASS_NAMES)).tolist()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(range(len(counts)), counts)
    ax.set_xticks(range(len(counts)), CLASS_NAMES, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(title)
    for i, c in enumerate(counts):
        ax.text(i, c, str(c), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: torch.Tensor) -> plt.Figure:
    """Rows are true classes, columns predictions; cells show counts."""
    m = matrix.cpu().numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > m.max() / 2 else "black")
    ax.set_title(f"test confusion matrix (accuracy {m.trace() / max(m.sum(), 1):.4f})")
    fig.tight_layout()
    return fig


class DatasetDashboards(Callback):
    """Adds figures to the run's TensorBoard: samples and class counts when fitting starts, confusion matrix after test."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = _writer(trainer)
        data = trainer.datamodule
        if writer is None or not trainer.is_global_zero or getattr(data, "train_set", None) is None:
            return
        train = data.train_set
        writer.add_figure("data/train_samples", sample_grid(train.images, train.labels), global_step=0)
        writer.add_figure("data/class_counts_train", class_counts_figure(train.labels, "train split"), global_step=0)
        writer.add_figure("data/class_counts_val", class_counts_figure(data.val_set.labels, "validation split"), global_step=0)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = _writer(trainer)
        matrix = pl_module.confusion.compute()
        if writer is not None and trainer.is_global_zero:
            writer.add_figure("test/confusion_matrix", confusion_figure(matrix), global_step=trainer.global_step)
