"""``FashionClassifier``: any backbone + cross-entropy + Adam, with one shared step for train/val/test."""

from __future__ import annotations

import inspect
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from fashion_conv.data.datamodule import steps_per_epoch
from fashion_conv.models.backbones import _REGISTRY, build_backbone, count_parameters
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.models.weights import checkpoint_backbone, flip_tta, read_weights_file


def _with_num_classes(backbone: str, kwargs: dict, num_classes: int) -> dict:
    """The backbone's kwargs with ``num_classes``: passed on when the backbone takes it (the built-in ones do),
    so the head has that many outputs; a backbone without the argument is only accepted for the default 10."""
    if "num_classes" in kwargs:
        if kwargs["num_classes"] != num_classes:
            raise ValueError(f"backbone_kwargs num_classes={kwargs['num_classes']} contradicts num_classes={num_classes}")
        return kwargs
    cls = _REGISTRY.get(backbone)  # as build_backbone: a registered name first, else a class path
    if cls is not None and "num_classes" in inspect.signature(cls).parameters:
        return {**kwargs, "num_classes": num_classes}
    if num_classes != 10:
        return {**kwargs, "num_classes": num_classes}  # a class path must accept it, or the error names it
    return kwargs


def steps_per_call_conflicts(trainer: Mapping[str, Any]) -> list[str]:
    """The trainer settings (``Trainer`` arguments by name) that count single batches, so they cannot run with
    ``steps_per_call > 1``: Lightning clips and accumulates only under automatic optimization, the batch limits and
    validation intervals would count groups, and ``max_steps`` would end a group early. Empty when a group of batches trains exactly like its batches."""
    get = trainer.get
    conflicts = []
    if get("gradient_clip_val"):
        conflicts.append("gradient_clip_val")
    if (get("accumulate_grad_batches") or 1) != 1:
        conflicts.append("accumulate_grad_batches")
    for name in ("limit_train_batches", "val_check_interval"):
        value = get(name)
        if value is not None and (isinstance(value, int) or value != 1.0):
            conflicts.append(name)
    for name in ("overfit_batches", "fast_dev_run"):
        if get(name):
            conflicts.append(name)
    if get("max_steps") not in (None, -1):  # stopping inside a group would end the epoch's call, and so validate
        conflicts.append("max_steps")
    return conflicts


def _trainer_settings(trainer) -> dict[str, Any]:
    """The ``Trainer`` arguments that ``steps_per_call_conflicts`` reads, from a built trainer."""
    return {
        "gradient_clip_val": trainer.gradient_clip_val,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "limit_train_batches": trainer.limit_train_batches,
        "val_check_interval": trainer.val_check_interval,
        "overfit_batches": trainer.overfit_batches,
        "fast_dev_run": trainer.fast_dev_run,
        "max_steps": trainer.max_steps,
    }


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
            ``onecycle`` (warm up to ``lr``, then anneal), stepped every batch.
        tta_hflip: test-time augmentation for validation, test and predict: average the logits of each image
            and its mirror image (twice the evaluation cost; training is unchanged).

    Training batches are ``(x, y)``, or ``BatchGroup`` lists of ``(x, y)`` batches when the DataModule groups them
    (``FashionMNISTDataModule(steps_per_call=N)``): then the module steps the optimizer once per batch itself
    (manual optimization, with Lightning's backward and optimizer-step hooks and precision plugin), and logs
    exactly what the one-batch path logs, at the same steps.
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
                raise FashionConvError(f"--model.backbone: {exc}") from None
        if lr <= 0:
            raise FashionConvError(f"--model.lr must be positive, got {lr}")
        if weight_decay < 0 or not 0 <= label_smoothing < 1:
            raise FashionConvError(f"--model.weight_decay must be >= 0 and --model.label_smoothing in [0, 1), got {weight_decay}, {label_smoothing}")
        if lr_schedule not in ("none", "cosine", "onecycle"):
            raise FashionConvError(f"--model.lr_schedule {lr_schedule!r}: choose none, cosine or onecycle")
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
        # validate_args=False: the inputs are ours, and the checks cost more than the update on small batches (its
        # mutants only check valid inputs again: equivalent but for speed). Micro accuracy needs no class count.
        self.accuracy = nn.ModuleDict(
            {
                s: MulticlassAccuracy(
                    num_classes,  # pragma: no mutate: equivalent, see above
                    average="micro",
                    validate_args=False,  # pragma: no mutate: equivalent, see above
                )
                for s in ("train_", "val_", "test_")
            }
        )
        self.confusion = MulticlassConfusionMatrix(
            num_classes,
            validate_args=False,  # pragma: no mutate: equivalent, see above
        )
        # The epoch's mean training loss. nan_strategy="disable": the NaN check would sync with the device every
        # step (and it also drops the weight argument, so each batch passes its loss once per sample).
        self.train_loss = MeanMetric(nan_strategy="disable")
        # Whether grouped steps may skip hooks that nothing overrides: set by on_train_start before any step.
        self._direct = False  # pragma: no mutate: equivalent, see above

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets the name of the running hook on the module around each of its ~20 hook calls a step;
        # nn.Module's __setattr__ (parameter, buffer and submodule checks) costs 1 us a time, a plain one 0.1 us.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            group = getattr(self.trainer.datamodule, "steps_per_call", 1)
            if group > 1:
                conflicts = steps_per_call_conflicts(_trainer_settings(self.trainer))
                if conflicts:
                    raise FashionConvError(
                        f"--data.steps_per_call {group} cannot run with --trainer.{', --trainer.'.join(conflicts)}: "
                        "they count single batches; use --data.steps_per_call 1"
                    )
            self.automatic_optimization = group == 1

    def on_train_start(self) -> None:
        self._direct = not self.automatic_optimization and self._plain_steps()

    def _plain_steps(self) -> bool:
        """True when Lightning's manual_backward and optimizer step would only run ``loss.backward()`` and the
        optimizer: one process, no gradient scaler, and no callback or module override of the hooks they call."""
        trainer = self.trainer
        plugin = trainer.precision_plugin
        if type(trainer.strategy) is not SingleDeviceStrategy:
            return False
        if not (type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)):
            return False
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        if any(is_overridden(h, c) for c in trainer.callbacks for h in hooks):  # the base class is the instance's
            return False
        return not any(is_overridden(h, self) for h in (*hooks, "backward"))  # Lightning clips only in automatic optimization

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

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if not self.automatic_optimization:  # a BatchGroup from FashionMNISTDataModule(steps_per_call > 1)
            return self._group_step(batch)
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        # Accuracy and the epoch's mean loss accumulate on the device (no host sync); self.log costs about
        # as much as an MLP step on CPU, so the step loss is logged only on the steps the logger writes.
        self.accuracy["train_"].update(logits, y)
        self.train_loss.update(loss.detach().expand(len(y)))  # (B,): weighs the batch by its size
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            # on_step and on_epoch are Lightning's defaults in training_step, and batch_size what it would read off
            # the batch (said, to spare it the search): their mutants are equivalent. The rate is a float: no sync.
            self.log("train/loss", loss, prog_bar=True,
                     on_step=True, on_epoch=False, batch_size=len(y))  # pragma: no mutate: equivalent, see above
            self.log("train/lr", self.optimizers().param_groups[0]["lr"],
                     on_step=True, on_epoch=False)  # pragma: no mutate: equivalent, see above
        return loss

    def _group_step(self, batches: list) -> torch.Tensor | None:
        """One optimizer step per ``(x, y)`` batch of the group, the same maths as ``training_step`` on each in turn."""
        trainer, optimizer, scheduler = self.trainer, self.optimizers(), self.lr_schedulers()
        every = trainer.log_every_n_steps
        logits_seen, labels_seen, losses = [], [], []
        for x, y in batches:
            step = self.global_step
            logits = self(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad()
            # Backward and step outside the mixed-precision autocast that Lightning opens around training_step, as on
            # the one-batch path (where they run after it): the same numbers, and bf16 backward under autocast
            # re-casts every gradient (a cnn epoch took 9.1 s instead of 5.6 s).
            with torch.autocast(x.device.type, enabled=False):
                if self._direct:
                    # What manual_backward and optimizer.step() come to here, without dispatching hooks that nothing
                    # overrides (about 0.1 ms a step on CPU); the step counters advance as Lightning's would.
                    loss.backward()
                    optimizer._on_before_step()
                    optimizer.optimizer.step()
                    optimizer._on_after_step()
                else:
                    self.manual_backward(loss)
                    optimizer.step()
            if scheduler is not None:
                scheduler.step()
            logits_seen.append(logits.detach())
            labels_seen.append(y)
            losses.append(loss.detach().expand(len(y)))
            if every and (step + 1) % every == 0:
                self._log_step(loss, lr, step)
        if not losses:
            return None
        # The metrics' sums over the group in one update each (one kernel launch instead of one a batch).
        self.accuracy["train_"].update(torch.cat(logits_seen), torch.cat(labels_seen))
        self.train_loss.update(torch.cat(losses))
        # Lightning counts one logging step per call; it must count optimizer steps, as on the one-batch path,
        # so that epoch and validation scalars land at the same steps (it adds the last one itself).
        trainer.fit_loop.epoch_loop._batches_that_stepped += len(losses) - 1
        return loss

    def _log_step(self, loss: torch.Tensor, lr: float, step: int) -> None:
        """What the one-batch path's ``self.log`` calls write at a logging step: the loggers' scalars and the bar's."""
        # batch_size spares Lightning's search of the batch for one; its value weighs epoch means only (this is per step).
        self.log("train/loss", loss, prog_bar=True, logger=False, batch_size=1)  # pragma: no mutate: equivalent, see above
        metrics = {"train/loss": loss.item(), "train/lr": lr, "epoch": self.current_epoch}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

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
        # on_epoch is Lightning's default in evaluation, and batch_size what it would read off the batch (said, to
        # spare it the search): their mutants are equivalent.
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True,
                 on_epoch=True, batch_size=len(y))  # pragma: no mutate: equivalent, see above
        self.log(f"{stage}/acc", acc, prog_bar=True,
                 on_epoch=True, batch_size=len(y))  # pragma: no mutate: equivalent, see above
        return logits

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

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
        # float rounding, tested), and 0.4-0.8 ms less per MLP step on CPU, where that loop is half the step.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in self.parameters())
        if hp.weight_decay > 0:
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, fused=fused)
        if hp.lr_schedule == "none":
            return optimizer
        steps = self._optimizer_steps()
        if hp.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        else:
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _optimizer_steps(self) -> int:
        """Optimizer steps of the whole run, which a schedule is laid out over: Lightning's estimate counts calls,
        so with groups of batches it is worked out from the batches of an epoch."""
        trainer = self.trainer
        calls = int(trainer.estimated_stepping_batches)  # also makes the train dataloader ready
        group = getattr(getattr(trainer, "datamodule", None), "steps_per_call", 1)
        loader = trainer.train_dataloader if group > 1 else None
        if loader is None:
            return calls
        return steps_per_epoch(loader, group) * trainer.max_epochs  # max_steps never runs with groups
