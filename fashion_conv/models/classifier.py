"""``FashionClassifier``: any backbone + cross-entropy + Adam, with one shared step for validation and test."""

from __future__ import annotations

import inspect
from typing import Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassConfusionMatrix

from fashion_conv.models.backbones import build_backbone, count_parameters, get_backbone_builder, list_backbones
from fashion_conv.models.weights import checkpoint_backbone, flip_tta, read_weights_file
from fashion_conv.utils.errors import ArgumentValueError

LR_SCHEDULES = ("none", "cosine", "onecycle")


def _with_num_classes(backbone: str, kwargs: dict, num_classes: int) -> dict:
    """The backbone's kwargs with ``num_classes``: passed on when the backbone takes it (the built-in ones do),
    so the head has that many outputs; a backbone without the argument is only accepted for the default 10."""
    if "num_classes" in kwargs:
        if kwargs["num_classes"] != num_classes:
            raise ValueError(f"backbone_kwargs num_classes={kwargs['num_classes']} contradicts num_classes={num_classes}")
        return kwargs
    if backbone in list_backbones():  # as build_backbone: a registered name first, else a class path
        if "num_classes" in inspect.signature(get_backbone_builder(backbone)).parameters:
            return {**kwargs, "num_classes": num_classes}
    if num_classes != 10:
        return {**kwargs, "num_classes": num_classes}  # a class path must accept it, or the error names it
    return kwargs


class FashionClassifier(LightningModule):
    """Classify Fashion-MNIST with a pluggable backbone.

    Args:
        backbone: a registered name (``mlp``, ``cnn``, ``cnn5``), a class path (``my_pkg.nets.Net``), or an
            ``nn.Module`` instance. Hyperparameters keep a name or class path, never the module itself.
        backbone_kwargs: keyword arguments for building the backbone from a name or class path.
        lr: Adam learning rate (the notebook's 1e-3).
        num_classes: number of classes (10).
        channels_last: keep conv weights and activations in NHWC memory order, which CPU and GPU conv kernels
            run faster; the same maths (outputs agree to float rounding), so on by default.
        weight_decay: decoupled weight decay; above 0 the optimizer is AdamW instead of Adam.
        label_smoothing: cross-entropy label smoothing for the training loss (evaluation losses stay plain).
        lr_schedule: ``none`` (the notebook's constant rate), ``cosine`` (decay to 0 over the run) or
            ``onecycle`` (warm up to ``lr``, then anneal), stepped every optimizer step.
        tta_hflip: test-time augmentation for validation, test and predict: average the logits of each image
            and its mirror image (twice the evaluation cost; training is unchanged).

    Batches are ``(x, y)``: images (B, 1, 28, 28) float in [0, 1] and labels (B,). Logged: ``train/loss`` (on
    logging steps), ``train/acc`` and ``train/loss_epoch`` (per epoch), ``val/loss``, ``val/acc``, ``val/ece``
    (expected calibration error, 15 bins), ``test/loss``, ``test/acc``.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "cnn",
        backbone_kwargs: dict | None = None,
        lr: float = 1e-3,
        num_classes: int = 10,
        channels_last: bool = True,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
        lr_schedule: Literal["none", "cosine", "onecycle"] = "none",
        tta_hflip: bool = False,
    ):
        super().__init__()
        if isinstance(backbone, nn.Module):
            self.backbone = backbone
            backbone = f"{type(backbone).__module__}.{type(backbone).__qualname__}"
        else:
            try:
                self.backbone = build_backbone(backbone, **_with_num_classes(backbone, backbone_kwargs or {}, num_classes))
            except (ValueError, TypeError) as exc:
                raise ArgumentValueError("backbone", f": {exc}") from None
        if lr <= 0:
            raise ArgumentValueError("lr", f"must be positive, got {lr}")
        if weight_decay < 0:
            raise ArgumentValueError("weight_decay", f"must be >= 0, got {weight_decay}")
        if not 0 <= label_smoothing < 1:
            raise ArgumentValueError("label_smoothing", f"must be in [0, 1), got {label_smoothing}")
        if lr_schedule not in LR_SCHEDULES:
            raise ArgumentValueError("lr_schedule", f"{lr_schedule!r}: choose none, cosine or onecycle")
        self.save_hyperparameters(
            {
                "backbone": backbone, "backbone_kwargs": backbone_kwargs, "lr": lr, "num_classes": num_classes,
                "channels_last": channels_last, "weight_decay": weight_decay, "label_smoothing": label_smoothing,
                "lr_schedule": lr_schedule, "tta_hflip": tta_hflip,
            }
        )  # fmt: skip
        self.num_params = count_parameters(self.backbone)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)  # 4-D conv weights to NHWC; others unchanged
        # validate_args=False: the inputs are ours, and the checks cost more than the update on small batches.
        self.accuracy = nn.ModuleDict(
            {s: MulticlassAccuracy(num_classes, average="micro", validate_args=False) for s in ("train_", "val_", "test_")}
        )
        self.val_ece = MulticlassCalibrationError(num_classes, n_bins=15, norm="l1", validate_args=False)
        self.confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        # The epoch's mean training loss. nan_strategy="disable": the NaN check would sync with the device every step.
        self.train_loss = MeanMetric(nan_strategy="disable")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, after checking the file: a backbone class path that the checkpoint
        names is imported only when the caller names it too (``backbone="my_pkg.Net"``); kwargs are checked."""
        backbone = kwargs.get("backbone")
        if not isinstance(backbone, nn.Module):
            # Kwargs are checked when the backbone is built: registered ones on the meta device first, no memory.
            checkpoint_backbone(read_weights_file(checkpoint_path), checkpoint_path, trusted=backbone)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.contiguous(memory_format=self.memory_format))

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation: ``forward``, or with ``tta_hflip`` the mean of the image's and its mirror's."""
        if not self.hparams.get("tta_hflip"):
            return self(x)
        return flip_tta(self, x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        # Accuracy and the epoch's mean loss accumulate on the device (no host sync each step).
        self.accuracy["train_"].update(logits, y)
        self.train_loss.update(loss.detach().expand(len(y)))  # (B,): weighs the batch by its size
        # The step loss only on the steps the logger writes: a self.log call costs about as much as an mlp step on CPU.
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:
            self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        acc = self.accuracy["train_"]
        # compute() already gathers every process's counts and sums; sync_dist averages the equal values (one
        # all-reduce an epoch) and keeps Lightning from warning under DDP.
        self.log("train/acc", acc.compute(), prog_bar=True, sync_dist=True)
        self.log("train/loss_epoch", self.train_loss.compute(), sync_dist=True)
        acc.reset()
        self.train_loss.reset()

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.evaluate(x)
        loss = F.cross_entropy(logits, y)
        acc = self.accuracy[f"{stage}_"]
        acc(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(y))
        self.log(f"{stage}/acc", acc, prog_bar=True, batch_size=len(y))
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._eval_step(batch, "val")
        self.val_ece.update(logits.float().softmax(dim=1), batch[1])
        self.log("val/ece", self.val_ece)

    def test_step(self, batch, batch_idx: int) -> None:
        self.confusion.update(self._eval_step(batch, "test"), batch[1])

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:  # Lightning passes dataloader_idx only if asked
        """Class probabilities (B, num_classes) for ``Trainer.predict`` (with ``tta_hflip`` if set); ``forward`` gives logits.

        A batch is the DataModule's ``(x, y)`` (labels ignored) or a bare ``x`` tensor (B, 1, 28, 28).
        """
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.evaluate(x).softmax(dim=1)

    def on_test_epoch_start(self) -> None:
        self.confusion.reset()

    def on_fit_start(self) -> None:
        self.log_param_count()

    def log_param_count(self) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"model/params": float(self.num_params)}, step=0)

    def configure_optimizers(self):
        hp = self.hparams
        # The fused kernel updates every parameter in one call: the same maths as the default per-tensor loop (to
        # float rounding, tested), and a large part of an mlp step on CPU, where that loop is half the step.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in self.parameters())
        if hp.weight_decay > 0:
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, fused=fused)
        if hp.lr_schedule == "none":
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)  # optimizer steps of the whole run
        if hp.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        else:
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
