"""Checkpoints: written atomically, and written on SIGTERM or SIGINT before the process exits."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fashion_conv.utils.atomic import atomic_path
from fashion_conv.utils.errors import FashionConvError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but a kill mid-write never leaves a truncated ``.ckpt`` behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


# The mid-epoch resume contract, in two places that must agree (why: Lightning restores the optimizer and the
# step count, but not where in the epoch's shuffle a run stopped, nor state its hooks would have reset):
# - GracefulStop (below) saves ``mid_epoch`` = (epoch, batches done) in the checkpoint and, on resume, tells
#   the sampler to skip ``batches x batch_size`` samples; fit.py refuses a resume whose batch size differs, so
#   the count stays true;
# - EpochShuffle (data/datamodule.py) draws each epoch's order from (seed, epoch) only, so the skipped samples are
#   exactly those already trained on.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop(Callback):
    """On SIGTERM (what schedulers send) or SIGINT (Ctrl-C), write ``last.ckpt`` before the next batch and stop.

    The checkpoint records how many batches of the epoch were done; on resume the shuffle skips exactly
    those, so the run continues as if it had never stopped. (Lightning's own SIGTERM handling finishes
    the epoch, or aborts validation and loses it, before stopping; its Ctrl-C handling tests and reports
    the partial run.) It also carries the run's training time across resumes (``train_seconds``).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._resume: tuple[int, int] | None = None
        self._run_handlers: dict[int, Any] = {}  # what catch_signals replaced
        self._train_handlers: dict[int, Any] = {}  # what on_train_start replaced
        self._seconds_before, self._started = 0.0, None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _on_signal(self, signum, frame) -> None:
        self.signum = signum

    def catch_signals(self, trainer: Trainer) -> bool:
        """Record SIGTERM and SIGINT instead of dying, until ``restore_signals``; False where it cannot (see below).

        fit.main calls this for the whole run (data set-up, validation, test, writing the outputs), so a signal
        there also stops the run without a report.
        """
        if self._run_handlers or not self._can_catch(trainer):
            return False
        self._run_handlers = self._install()
        return True

    def restore_signals(self) -> None:
        self._run_handlers = self._restore(self._run_handlers)

    @staticmethod
    def _can_catch(trainer: Trainer) -> bool:
        # One process only: under DDP a save needs every rank, so Lightning's own handling (stop all ranks at the
        # end of the epoch, after its checkpoint) stays in charge there.
        return trainer.world_size == 1 and threading.current_thread() is threading.main_thread()

    def _install(self) -> dict[int, Any]:
        return {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}

    @staticmethod
    def _restore(handlers: dict[int, Any]) -> dict[int, Any]:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        return {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._seconds_before, self._started = 0.0, None  # a resumed run's total comes from load_state_dict

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._can_catch(trainer):
            # Set again even when fit.main already did: Lightning's fit wraps the SIGTERM handler with its own,
            # which would stop after the current batch, before this callback could write the mid-epoch checkpoint.
            self._train_handlers = self._install()
        self._started = time.perf_counter()
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
            trainer.save_checkpoint(self.last_path(trainer), weights_only=False)  # a full training checkpoint, said explicitly
            raise SIGTERMException

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop_clock()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop_clock()

    def _stop_clock(self) -> None:
        self._seconds_before, self._started = self.train_seconds(), None
        self._train_handlers = self._restore(self._train_handlers)

    def train_seconds(self) -> float:
        """Seconds spent in training loops by this run, over every process that resumed it."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._seconds_before + running

    @staticmethod
    def last_path(trainer: Trainer) -> Path:
        for callback in trainer.checkpoint_callbacks:
            if callback.filename == "last" and callback.dirpath:
                return Path(callback.dirpath) / "last.ckpt"
        return Path(trainer.default_root_dir) / "last.ckpt"

    def state_dict(self) -> dict[str, Any]:
        stopping = getattr(self, "_stopping_at", None)
        return {"mid_epoch": list(stopping) if stopping else None, "train_seconds": self.train_seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mid = state_dict.get("mid_epoch")
        self._resume = tuple(mid) if mid else None
        self._seconds_before = float(state_dict.get("train_seconds") or 0.0)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's best-by-metric checkpoint, plus ``best.ckpt``: a stable name for it (``best-epoch=3-...``
    tells which epoch won but changes from run to run). The copy is written atomically, so ``best.ckpt``
    is always a whole checkpoint, the old best or the new one."""

    ALIAS = "best.ckpt"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliased: tuple[str, Any] | None = None  # the (path, score tensor) that best.ckpt holds

    # ModelCheckpoint saves in these three hooks (which one depends on its settings); the alias follows each.
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        self.copy_best(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.copy_best(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self.copy_best(trainer)

    def copy_best(self, trainer: Trainer) -> None:
        """Copy a new best checkpoint to ``best.ckpt`` (rank 0 wrote it, and Lightning waited for it)."""
        # ModelCheckpoint sets a new score tensor with each new best: compared by identity, so no step waits on .item().
        best = (self.best_model_path, self.best_model_score)
        if not self.best_model_path or not trainer.is_global_zero:
            return
        if self.aliased is not None and best[0] == self.aliased[0] and best[1] is self.aliased[1]:
            return
        with atomic_path(Path(self.best_model_path).with_name(self.ALIAS)) as tmp:
            shutil.copyfile(self.best_model_path, tmp)
        self.aliased = best
