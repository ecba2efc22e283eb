"""Checkpoints: written atomically, and written on SIGTERM before the process exits."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fashion_conv.atomic import atomic_path
from fashion_conv.errors import FashionConvError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but a kill mid-write never leaves a truncated ``.ckpt`` behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class GracefulStop(Callback):
    """On SIGTERM (what schedulers send), write ``last.ckpt`` before the next batch and exit with 143.

    The checkpoint records how many batches of the epoch were done; on resume the shuffle skips exactly
    those, so the run continues as if it had never stopped. (Lightning's own SIGTERM handling finishes
    the epoch, or aborts validation and loses it, before stopping.)
    """

    def __init__(self) -> None:
        self.requested = False
        self._resume: tuple[int, int] | None = None
        self._previous_handler = None

    def _on_sigterm(self, signum, frame) -> None:
        self.requested = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # One process only: under DDP a save needs every rank, so Lightning's own handling (stop all ranks at the
        # end of the epoch, after its checkpoint) stays in charge there.
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        if self._resume is not None:
            epoch, batches = self._resume
            sampler = getattr(trainer.train_dataloader, "sampler", None)
            if not hasattr(sampler, "resume_at"):
                raise FashionConvError("this checkpoint was written mid-epoch; resuming it needs FashionMNISTDataModule's sampler")
            sampler.resume_at(epoch, batches * trainer.train_dataloader.batch_size)
            self._resume = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if self.requested:
            self._stopping_at = (trainer.current_epoch, batch_idx)
            trainer.save_checkpoint(self.last_path(trainer))
            raise SIGTERMException

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_handler()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    @staticmethod
    def last_path(trainer: Trainer) -> Path:
        for callback in trainer.checkpoint_callbacks:
            if callback.filename == "last" and callback.dirpath:
                return Path(callback.dirpath) / "last.ckpt"
        return Path(trainer.default_root_dir) / "last.ckpt"

    def state_dict(self) -> dict[str, Any]:
        stopping = getattr(self, "_stopping_at", None)
        return {"mid_epoch": list(stopping) if stopping else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mid = state_dict.get("mid_epoch")
        self._resume = tuple(mid) if mid else None


class BestCheckpoint(ModelCheckpoint):
    """Lightning's best-by-metric checkpoint, plus ``best.ckpt``: a stable name for it (``best-epoch=3-...``
    tells which epoch won but changes from run to run). The copy is written atomically, so ``best.ckpt``
    is always a whole checkpoint, the old best or the new one."""

    ALIAS = "best.ckpt"

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if filepath == self.best_model_path and trainer.is_global_zero:  # rank 0 wrote the file (Lightning waits for it)
            with atomic_path(Path(filepath).with_name(self.ALIAS)) as tmp:
                shutil.copyfile(filepath, tmp)
