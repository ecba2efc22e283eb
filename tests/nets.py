"""A user's own backbone, for the class-path tests: any nn.Module with the (B,1,28,28) -> (B,10) contract."""

import os
import time
from pathlib import Path

from lightning import Callback
from torch import nn


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


class RecordSigterm(Callback):
    """Test helper: write the name of the SIGTERM handler in force during the first training batch to ``path``."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            import signal

            self.path.write_text(getattr(signal.getsignal(signal.SIGTERM), "__qualname__", "other"))
