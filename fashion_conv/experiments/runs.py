"""Train and test one variant with one seed, in-process: metrics, per-epoch curves and timings, optional shift probe."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from fashion_conv.datamodule import FashionMNISTDataModule
from fashion_conv.experiments.plans import Variant
from fashion_conv.experiments.probes import shift_accuracy
from fashion_conv.module import FashionClassifier


@dataclass(frozen=True)
class Conditions:
    """What every run of a report shares, so runs differ only in their variant and seed."""

    data_dir: str
    epochs: int
    train_size: int | None
    val_size: int
    test_size: int | None
    batch_size: int = 64
    lr: float = 1e-3
    precision: str = "32-true"
    accelerator: str = "auto"
    split_seed: int = 0  # train/validation split, the same for every run
    test_subset_seed: int = 0  # which test images a test_size subset keeps, the same for every run
    permutation_seed: int = 0  # the one pixel permutation of the permutation experiment


class EpochRecorder(Callback):
    """Per training epoch: seconds spent training (validation excluded), mean training loss, train/val metrics.

    Epoch-level metrics are read at the start of the next epoch and at the end of training, since the module
    may log ``train/acc`` in its own ``on_train_epoch_end``, which runs after the callbacks' one.
    """

    def __init__(self):
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._collect(trainer)
        self._start, self._val_seconds = _now(pl_module), 0.0
        self._loss_sum, self._seen = torch.zeros((), device=pl_module.device), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = len(batch[1])
        self._loss_sum += outputs["loss"].detach().float() * n  # no .item(): no device sync per step
        self._seen += n

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_start = _now(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and hasattr(self, "_start"):
            self._val_seconds += _now(pl_module) - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = _now(pl_module) - self._start - self._val_seconds
        loss = (self._loss_sum / max(self._seen, 1)).item()
        self._pending = {"epoch": trainer.current_epoch, "train_seconds": seconds, "train_loss": loss}

    def on_train_end(self, trainer, pl_module) -> None:
        self._collect(trainer)

    def _collect(self, trainer) -> None:
        pending = getattr(self, "_pending", None)
        if pending is None:
            return
        metrics = trainer.callback_metrics
        for key in ("train/acc", "val/loss", "val/acc"):
            pending[key.replace("/", "_")] = float(metrics[key]) if key in metrics else float("nan")
        self.epochs.append(pending)
        self._pending = None


def _now(pl_module) -> float:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)  # GPU work is asynchronous: wait before reading the clock
    return time.perf_counter()


def train_run(
    variant: Variant, seed: int, cond: Conditions, run_dir: Path, max_shift: int | None = None
) -> tuple[dict, list[dict]]:
    """Fit ``variant`` with ``seed``, test the checkpoint with the best val/acc; return (result row, epoch curves).

    ``run_dir`` becomes a TensorBoard run (replaced if it exists). ``max_shift``: also measure test accuracy
    on images shifted by 0..max_shift pixels (see ``probes.shift_accuracy``).
    """
    L.seed_everything(seed, verbose=False)  # weights' initialisation and the per-epoch shuffle
    data = FashionMNISTDataModule(
        data_dir=cond.data_dir,
        batch_size=cond.batch_size,
        val_size=cond.val_size,
        split_seed=cond.split_seed,
        train_size=variant.train_size or cond.train_size,
        pixel_permutation_seed=cond.permutation_seed if variant.permuted else None,
    )
    model = FashionClassifier(backbone=variant.backbone, backbone_kwargs=variant.backbone_kwargs or None, lr=cond.lr)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a rerun replaces its run, so TensorBoard never mixes two runs in one folder
    logger = TensorBoardLogger(
        save_dir=run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name, default_hp_metric=False
    )
    recorder = EpochRecorder()
    # The best weights by val/acc, kept only until they are tested: a report trains dozens of models.
    with tempfile.TemporaryDirectory(prefix="fashion_conv_ckpt_") as ckpt_dir:
        best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/acc", mode="max", save_weights_only=True)
        trainer = L.Trainer(
            max_epochs=cond.epochs, accelerator=cond.accelerator, devices=1, precision=cond.precision, logger=logger,
            callbacks=[best, recorder], num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        fit_seconds = time.perf_counter() - start
        images, labels = test_set_tensors(data, cond)
        loader = DataLoader(TensorDataset(images, labels), batch_size=data.hparams.eval_batch_size)
        tested = trainer.test(
            model, dataloaders=loader, ckpt_path=best.best_model_path, verbose=False, weights_only=True
        )[0]
    row = {
        "variant": variant.label,
        "backbone": variant.backbone,
        "backbone_kwargs": json.dumps(variant.backbone_kwargs, sort_keys=True),
        "permuted": variant.permuted,
        "seed": seed,
        "train_images": len(data.train_set),
        "params": model.num_params,
        "epochs": len(recorder.epochs),
        "best_epoch": int(torch.tensor([e["val_acc"] for e in recorder.epochs]).argmax()),
        "val_acc": float(best.best_model_score),
        "test_acc": tested["test/acc"],
        "test_loss": tested["test/loss"],
        "epoch_seconds": sum(e["train_seconds"] for e in recorder.epochs) / len(recorder.epochs),
        "fit_seconds": fit_seconds,
        "run_dir": str(run_dir),
    }
    if max_shift is not None:
        for k, acc in enumerate(shift_accuracy(model, images, labels, max_shift, cond, data.hparams.eval_batch_size)):
            row[f"shift_{k}"] = acc
            logger.experiment.add_scalar("probe/shift_acc", acc, k)
    hparams = {
        k: row[k]
        for k in ("variant", "backbone", "backbone_kwargs", "permuted", "seed", "train_images", "params", "epochs")
    }
    hparams.update(lr=cond.lr, batch_size=cond.batch_size, precision=cond.precision, test_images=len(labels))
    logger.log_hyperparams(hparams, metrics={"hp/val_acc": row["val_acc"], "hp/test_acc": row["test_acc"]})
    logger.save()
    return row, [{"variant": variant.label, "seed": seed, **e} for e in recorder.epochs]


def test_set_tensors(data: FashionMNISTDataModule, cond: Conditions) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataModule's test batches as two CPU tensors; with ``test_size``, a fixed random subset of them."""
    data.setup("test")
    batches = list(data.test_dataloader())
    images = torch.cat([x.cpu() for x, _ in batches])
    labels = torch.cat([y.cpu() for _, y in batches])
    if cond.test_size is not None and cond.test_size < len(labels):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cond.test_subset_seed))
        keep = order[: cond.test_size].sort().values  # in file order, like the full test set
        images, labels = images[keep], labels[keep]
    return images, labels
