"""Train and test one variant with one seed through ``fit.run``: a normal run folder, plus per-epoch curves,
timings and the optional shift probe, returned as the report's row."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from fashion_conv import fit
from fashion_conv.research.experiments.plans import Conditions, Variant
from fashion_conv.research.experiments.probes import shift_accuracy


class EpochRecorder(Callback):
    """Per training epoch: seconds spent training (validation excluded), mean training loss, train/val metrics.

    Epoch-level metrics are read at the start of the next epoch and at the end of training, since the module
    logs ``train/acc`` and ``train/loss_epoch`` in its own ``on_train_epoch_end``, which runs after the
    callbacks' one. After testing it keeps the tested model (the best checkpoint's weights) for the probes.
    """

    def __init__(self):
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._collect(trainer)
        self._start, self._val_seconds = _now(pl_module), 0.0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_start = _now(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and hasattr(self, "_start"):
            self._val_seconds += _now(pl_module) - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = _now(pl_module) - self._start - self._val_seconds
        self._pending = {"epoch": trainer.current_epoch, "train_seconds": seconds}

    def on_train_end(self, trainer, pl_module) -> None:
        self._collect(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self.tested, self.data = pl_module, trainer.datamodule

    def _collect(self, trainer) -> None:
        pending = getattr(self, "_pending", None)
        if pending is None:
            return
        metrics = trainer.callback_metrics
        for key, column in (("train/loss_epoch", "train_loss"), ("train/acc", "train_acc"), ("val/loss", "val_loss"), ("val/acc", "val_acc")):
            pending[column] = float(metrics[key]) if key in metrics else float("nan")
        self.epochs.append(pending)
        self._pending = None


def _now(pl_module) -> float:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)  # GPU work is asynchronous: wait before reading the clock
    return time.perf_counter()


def fit_config(variant: Variant, seed: int, cond: Conditions, run_dir: Path) -> dict:
    """The ``fit`` configuration of one run (saved as its ``config.yaml``): the variant, the report's conditions."""
    data = {"data_dir": cond.data_dir, "batch_size": cond.batch_size, "val_size": cond.val_size, "split_seed": cond.split_seed,
            "train_size": variant.train_size or cond.train_size, "test_size": cond.test_size,
            "pixel_permutation_seed": cond.permutation_seed if variant.permuted else None}  # fmt: skip
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {
        "save_dir": str(run_dir.parent.parent), "name": run_dir.parent.name, "version": run_dir.name, "default_hp_metric": False}}  # fmt: skip
    return {
        "seed_everything": seed,  # the weights' initialisation and the per-epoch shuffle
        "model": {"backbone": variant.backbone, "backbone_kwargs": variant.backbone_kwargs or None, "lr": cond.lr},
        "data": data,
        "trainer": {"max_epochs": cond.epochs, "accelerator": cond.accelerator, "devices": 1, "precision": cond.precision,
                    "logger": logger, "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False},
    }  # fmt: skip


def train_run(variant: Variant, seed: int, cond: Conditions, run_dir: str, max_shift: int | None = None) -> dict:
    """Fit ``variant`` with ``seed`` into the run folder ``run_dir`` (replaced if a stopped run left one), test
    its best checkpoint; ``{"row": the report's row, "curves": one row per epoch}``. ``max_shift``: also the
    test accuracy on images shifted by 0..max_shift pixels (see ``probes.shift_accuracy``)."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # TensorBoard never mixes two runs in one folder
    recorder = EpochRecorder()
    summary = fit.run(fit_config(variant, seed, cond, run_dir), callbacks=[recorder])
    model, data = recorder.tested, recorder.data
    row = {
        "variant": variant.label,
        "backbone": variant.backbone,
        "backbone_kwargs": json.dumps(variant.backbone_kwargs, sort_keys=True),
        "permuted": variant.permuted,
        "seed": seed,
        "train_images": len(data.train_set),
        "params": summary["params"],
        "epochs": len(recorder.epochs),
        "best_epoch": int(torch.tensor([e["val_acc"] for e in recorder.epochs]).argmax()),
        "val_acc": summary["val_acc"],
        "test_acc": summary["test_acc"],
        "test_loss": summary["test_loss"],
        "epoch_seconds": sum(e["train_seconds"] for e in recorder.epochs) / len(recorder.epochs),
        "fit_seconds": summary["train_seconds"],
        "run_dir": str(run_dir),
    }
    if max_shift is not None:
        test = data.test_set
        accuracies = shift_accuracy(model, test.images.float().div(255), test.labels, max_shift, cond, data.hparams.eval_batch_size)
        writer = model.logger.experiment if model.logger else None
        for k, acc in enumerate(accuracies):
            row[f"shift_{k}"] = acc
            if writer is not None:
                writer.add_scalar("probe/shift_acc", acc, k)
                writer.flush()
    return {"row": row, "curves": [{"variant": variant.label, "seed": seed, **e} for e in recorder.epochs]}
