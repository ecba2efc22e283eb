"""Test helpers loaded by class path: a user's own backbone (TinyNet) and callbacks that pause, signal or record a run."""

import os
import time
from pathlib import Path

import torch
from lightning import Callback
from torch import nn



class Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class TinyNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x)


class PauseAt(Callback):
    """Test helper: at (epoch, batch) write ``marker`` and sleep, so a test can kill the process mid-epoch."""

    def __init__(self, epoch: int, batch: int, marker: str, seconds: float = 120.0):
        self.epoch, self.batch, self.marker, self.seconds = epoch, batch, Path(marker), seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self.marker.write_text(str(os.getpid()))
            time.sleep(self.seconds)


class PauseInTest(Callback):
    """Test helper: at the first test batch write ``marker`` and sleep, so a test can signal the process while it tests."""

    def __init__(self, marker: str, seconds: float = 3.0):
        self.marker, self.seconds = Path(marker), seconds

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.marker.write_text(str(os.getpid()))
            time.sleep(self.seconds)


class SignalInTest(Callback):
    """Test helper: send this process ``signum`` (SIGINT: Ctrl-C) as the final test starts, in-process."""

    def __init__(self, signum: int = 2):
        self.signum = signum

    def on_test_start(self, trainer, pl_module):
        os.kill(os.getpid(), self.signum)


class CtrlCAtStart(Callback):
    """Test helper: Ctrl-C while fit builds its objects (raised from this callback's construction)."""

    def __init__(self):
        raise KeyboardInterrupt


class FullDiskInSetup(Callback):
    """Test helper: the disk is full when the run sets up: a WriteError as an atomic write raises it (``atomic``),
    or the OSError of another write, naming its file (``named``) or not (``unnamed``)."""

    def __init__(self, kind: str = "atomic"):
        self.kind = kind

    def setup(self, trainer, pl_module, stage):
        import errno

        from fashion_conv.utils.atomic import WriteError

        path = Path(trainer.default_root_dir) / "run.ckpt"
        if self.kind == "atomic":
            raise WriteError(path, "No space left on device")
        raise OSError(errno.ENOSPC, "No space left on device", *([str(path)] if self.kind == "named" else []))


class RecordSigterm(Callback):
    """Test helper: write the name of the SIGTERM handler in force during the first training batch to ``path``."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            import signal

            self.path.write_text(getattr(signal.getsignal(signal.SIGTERM), "__qualname__", "other"))


class RecordSteps(Callback):
    """Test helper: save to ``path`` what each optimizer step saw (backbone weights before it, its batch) and the
    weights each validation epoch used, so a test can recompute every logged number with plain PyTorch.

    Steps are seen through the torch optimizer's own pre-step hook, so no Lightning hook is overridden.
    """

    def __init__(self, path: str):
        self.path, self.steps, self.validated = Path(path), [], []
        self._batches, self._handle = [], None

    @staticmethod
    def _weights(pl_module) -> dict:
        return {k: v.detach().clone() for k, v in pl_module.backbone.state_dict().items()}

    def on_train_start(self, trainer, pl_module):
        self._module = pl_module
        self._handle = trainer.optimizers[0].register_step_pre_hook(self._before_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batches = [batch]
        self._epoch = trainer.current_epoch

    def _before_step(self, optimizer, args, kwargs):
        x, y = self._batches.pop(0)
        self.steps.append({"epoch": self._epoch, "x": x.clone(), "y": y.clone(), "weights": self._weights(self._module)})

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append({"epoch": trainer.current_epoch, "weights": self._weights(pl_module)})

    def on_train_end(self, trainer, pl_module):
        self._handle.remove()
        torch.save({"steps": self.steps, "validated": self.validated}, self.path)


class SignalAt(Callback):
    """Test helper: send ``signum`` to this process at (epoch, batch), in process: a fast SIGTERM test."""

    def __init__(self, epoch: int, batch: int, signum: int = 15):
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)
