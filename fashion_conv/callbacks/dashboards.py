"""TensorBoard extras: labelled sample images and class counts at fit start, a test confusion matrix at test end,
the HPARAMS tab's columns and values."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to TensorBoard, never shown
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard.summary import scalar
from torch.utils.tensorboard.writer import FileWriter

from fashion_conv.data.csvio import CLASS_NAMES


def _writer(trainer: Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


# TensorBoard's TIME SERIES shows an image about 200 pixels high in a card about 370 wide (IMAGES shows it as
# drawn): figures are drawn that size (100 dpi) with 7-9 pt text, so they are read without enlarging them.
CARD = (3.7, 2.1)  # inches


def sample_grid(images: torch.Tensor, labels: torch.Tensor, n: int = 12) -> plt.Figure:
    """The notebook's ``show_samples``: the first ``n`` images with their class names."""
    cols = 6
    rows = -(-min(n, len(images)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(CARD[0], rows * 0.85), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, label in zip(axes.flat, images[:n], labels[:n]):
        ax.imshow(img.squeeze(0), cmap="gray", vmin=0, vmax=255)
        ax.set_title(CLASS_NAMES[int(label)], fontsize=7, pad=2)
    fig.tight_layout(pad=0.2, h_pad=0.3, w_pad=0.2)
    return fig


def class_counts_figure(labels: torch.Tensor, title: str) -> plt.Figure:
    """The notebook's ``value_counts``, as a bar chart: one labelled horizontal bar a class."""
    counts = torch.bincount(labels, minlength=len(CLASS_NAMES)).tolist()
    fig, ax = plt.subplots(figsize=CARD)
    ax.barh(range(len(counts)), counts, color="tab:blue")
    ax.set_yticks(range(len(counts)), CLASS_NAMES, fontsize=8)
    ax.invert_yaxis()  # class 0 on top, as in the dataset's label order
    ax.set_xlim(0, max(max(counts), 1) * 1.25)  # room for the numbers
    ax.set_xticks([])  # each bar carries its count
    ax.tick_params(axis="y", length=0, pad=3)  # no tick marks or left spine over the last letter of a class name
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.set_title(f"{title}: {sum(counts):,} images", fontsize=9)
    for i, c in enumerate(counts):
        ax.text(c, i, f" {c:,}", va="center", fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def confusion_figure(matrix: torch.Tensor) -> plt.Figure:
    """Rows are true classes, columns predictions (by class number); cells show counts."""
    m = matrix.cpu().numpy()
    fig, ax = plt.subplots(figsize=CARD)
    ax.imshow(m, cmap="Blues", aspect="auto")  # wide cells: 4-digit counts fit in a card-sized figure
    ax.set_xticks(range(len(CLASS_NAMES)), range(len(CLASS_NAMES)), fontsize=7)
    ax.set_yticks(range(len(CLASS_NAMES)), [f"{name} {i}" for i, name in enumerate(CLASS_NAMES)], fontsize=7)
    ax.tick_params(length=0, pad=2)
    ax.xaxis.tick_top()
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > m.max() / 2 else "black")
    ax.set_xlabel(f"predicted (rows: true class), test acc {m.trace() / max(m.sum(), 1):.4f}", fontsize=8)
    fig.tight_layout(pad=0.3)
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


# TensorBoard's HPARAMS tab ticks its first 5 columns by default, those marked ``differs`` first: these 5 name a
# run completely (``recipe`` spells out every training setting); each setting is also a column of its own.
HPARAMS_SHOWN = ("backbone", "epochs", "params", "recipe", "seed")
HPARAMS_METRICS = {"hp/val_acc": "best validation accuracy", "hp/test_acc": "test accuracy of the best checkpoint"}


def recipe_text(hp: dict) -> str:
    """The training settings in one line, defaults left out: ``AdamW lr 0.003 wd 0.05 onecycle, batch 128, ...``."""
    wd = hp.get("weight_decay") or 0
    parts = [f"{'AdamW' if wd else 'Adam'} lr {hp.get('lr'):g}" + (f" wd {wd:g}" if wd else "")]
    if hp.get("lr_schedule", "none") != "none":
        parts[0] += f" {hp['lr_schedule']}"
    parts.append(f"batch {hp.get('batch_size')}")
    parts.append(str(hp.get("precision", "")))
    if hp.get("label_smoothing"):
        parts.append(f"smoothing {hp['label_smoothing']:g}")
    if hp.get("random_shift"):
        parts.append(f"shift {hp['random_shift']}")
    parts += [name for key, name in (("hflip", "hflip"), ("tta_hflip", "TTA")) if hp.get(key)]
    if hp.get("random_erasing"):
        parts.append(f"erasing {hp['random_erasing']:g}")
    return ", ".join(p for p in parts if p)


def _hparam_type(value) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL  # shown as true/false, not 0.0000
    return api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, (int, float)) else api_pb2.DATA_TYPE_STRING


def log_hparams(log_dir: str | Path, hp: dict, metrics: dict, step: int, trial_id: str | None = None) -> None:
    """Into a new event file in ``log_dir``: declare the HPARAMS tab's columns (TensorBoard's experiment config; every run writes the same one), this
    run's values (a session start, named ``trial_id`` in the table, e.g. ``cnn/version_0``) and its final
    metrics (scalars ``hp/*``)."""
    hp = {k: ("none" if v is None else v) for k, v in {**hp, "recipe": recipe_text(hp)}.items()}
    infos = [api_pb2.HParamInfo(name=k, type=_hparam_type(v), differs=k in HPARAMS_SHOWN) for k, v in hp.items()]
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t), description=d) for t, d in HPARAMS_METRICS.items()]
    experiment = plugin_data_pb2.HParamsPluginData(experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metric_infos))
    value = summary_pb2.Summary.Value(tag=hp_metadata.EXPERIMENT_TAG, metadata=hp_metadata.create_summary_metadata(experiment))
    writer = FileWriter(str(log_dir))
    try:
        writer.add_summary(summary_pb2.Summary(value=[value]))
        writer.add_summary(hparams_pb(hp, trial_id=trial_id))
        for tag, number in metrics.items():
            writer.add_summary(scalar(tag, number), global_step=step)
    finally:
        writer.close()
