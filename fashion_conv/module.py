"""``FashionClassifier``: any backbone + cross-entropy + Adam, with one shared step for train/val/test."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from fashion_conv.backbones import build_backbone, count_parameters
from fashion_conv.errors import FashionConvError


class FashionClassifier(LightningModule):
    """Classify Fashion-MNIST with a pluggable backbone.

    Args:
        backbone: a registered name (``mlp``, ``cnn``, ``cnn5``), a class path (``my_pkg.nets.Net``), or an
            ``nn.Module`` instance. Hyperparameters keep a name or class path, never the module itself.
        backbone_kwargs: keyword arguments for building the backbone from a name or class path.
        lr: Adam learning rate (the notebook's 1e-3).
        num_classes: number of classes (10).
    """

    def __init__(self, backbone: str | nn.Module = "cnn", backbone_kwargs: dict | None = None, lr: float = 1e-3, num_classes: int = 10):
        super().__init__()
        if isinstance(backbone, nn.Module):
            self.backbone = backbone
            backbone = f"{type(backbone).__module__}.{type(backbone).__qualname__}"
        else:
            try:
                self.backbone = build_backbone(backbone, **(backbone_kwargs or {}))
            except (ValueError, TypeError) as exc:
                raise FashionConvError(f"--model.backbone: {exc}") from None
        if lr <= 0:
            raise FashionConvError(f"--model.lr must be positive, got {lr}")
        self.save_hyperparameters({"backbone": backbone, "backbone_kwargs": backbone_kwargs, "lr": lr, "num_classes": num_classes})
        self.num_params = count_parameters(self.backbone)
        self.accuracy = nn.ModuleDict({s: MulticlassAccuracy(num_classes, average="micro") for s in ("train_", "val_", "test_")})
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = self.accuracy[f"{stage}_"]
        acc(logits, y)
        # Training loss per step (the notebook's curve); accuracies and eval losses per epoch.
        train = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=not train, prog_bar=True, batch_size=len(y), sync_dist=not train)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        if stage == "test":
            self.confusion.update(logits, y)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities (B, num_classes) for ``Trainer.predict``; ``forward`` gives logits.

        A batch is the DataModule's ``(x, y)`` (labels ignored) or a bare ``x`` tensor (B, 1, 28, 28).
        """
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=1)

    def on_test_epoch_start(self) -> None:
        self.confusion.reset()

    def on_fit_start(self) -> None:
        self.log_param_count()

    def log_param_count(self) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"model/params": float(self.num_params)}, step=0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
