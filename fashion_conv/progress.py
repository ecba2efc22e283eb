"""``StepProgressBar``: Lightning's TQDM bar, counting training batches (optimizer steps) when calls take groups."""

from __future__ import annotations

from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n

from fashion_conv.data.datamodule import BatchGroup, steps_per_epoch


class StepProgressBar(TQDMProgressBar):
    """The bar Lightning users know, but its count and total are batches of ``batch_size`` (optimizer steps) even
    when each ``training_step`` call takes a ``BatchGroup`` of them (``--data.steps_per_call``), so a mlp epoch
    reads 860/860, not 54/54. It redraws about every ``refresh_rate`` steps."""

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        trainer = self.trainer
        group = getattr(trainer.datamodule, "steps_per_call", 1)
        if group == 1 or trainer.train_dataloader is None:
            return total
        steps = steps_per_epoch(trainer.train_dataloader, group)
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(steps, trainer.max_steps - trainer.global_step)
        return steps

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not isinstance(batch, BatchGroup):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar = self.train_progress_bar
        if bar is None or not self.is_enabled:
            return
        done = batch_idx * trainer.datamodule.steps_per_call  # steps of this epoch before this call
        n = done + len(batch)
        if n // self.refresh_rate > done // self.refresh_rate or n == bar.total:
            _update_n(bar, n)
            bar.set_postfix(self.get_metrics(trainer, pl_module))
