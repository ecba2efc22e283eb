"""Shared fixtures: tiny Fashion-MNIST-shaped data written by the tests themselves."""

from __future__ import annotations

import gzip
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_conv.data.csvio import write_csv
from fashion_conv.data.idx import IdxSpec

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO / "data" / "processed"


def tiny_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) and images (n, 28, 28) uint8; each class lights a different row band, so it is learnable."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4 : 2 * label + 7, 4:24] = 230
    return labels, images


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0800|ndim, big-endian dims, then the bytes."""
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


@pytest.fixture
def tiny_idx(tmp_path: Path):
    """Four gzipped tiny IDX files in ``tmp_path/src`` and the specs (counts, MD5s) that accept them."""
    src = tmp_path / "src"
    src.mkdir()
    specs = {}
    for prefix, n, seed in (("train", 120, 1), ("t10k", 40, 2)):
        labels, images = tiny_arrays(n, seed)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{kind}"
            raw = idx_bytes(array)
            (src / f"{name}.gz").write_bytes(gzip.compress(raw))
            specs[name] = IdxSpec(array.ndim, n, hashlib.md5(raw).hexdigest())
    return src, specs


def write_tiny_data(data_dir: Path, n_train: int = 120, n_test: int = 40) -> Path:
    """Write ``<data_dir>/processed/fashion-mnist-{train,test}.csv`` from ``tiny_arrays`` (seeds 1 and 2); returns data_dir.

    The one writer of the tiny dataset: every test that needs a data_dir gets it from here.
    """
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        write_csv(data_dir / "processed" / f"fashion-mnist-{split}.csv", *tiny_arrays(n, seed))
    return data_dir


@pytest.fixture(scope="session")
def make_tiny_data():
    """The factory ``write_tiny_data(data_dir, n_train=120, n_test=40)``, for fixtures of any scope."""
    return write_tiny_data


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    """A data_dir with processed CSVs: 120 training rows, 40 test rows."""
    return write_tiny_data(tmp_path / "data")


# ---- a trained model for the predict and export tests ----


def tiny_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) and images (n, 28, 28) uint8: a light block on black, its size set by the label."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 20, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 4 : 8 + 2 * label, 6:22] = 220
    return labels, images


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real (tiny) run: a Lightning checkpoint and the model.pth that fit.py would write beside it."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from fashion_conv import FashionClassifier

    folder = tmp_path_factory.mktemp("run")
    labels, images = tiny_images(32)
    x = torch.from_numpy(images).unsqueeze(1).float() / 255
    loader = DataLoader(TensorDataset(x, torch.from_numpy(labels).long()), batch_size=16)
    L.seed_everything(0, verbose=False)
    model = FashionClassifier("mlp")
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`")
        trainer.fit(model, loader)
    trainer.save_checkpoint(folder / "last.ckpt")
    torch.save({k: v.cpu() for k, v in model.backbone.state_dict().items()}, folder / "model.pth")
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """An untrained model.pth per registered backbone."""
    from fashion_conv import build_backbone, list_backbones

    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in list_backbones():
        torch.manual_seed(0)
        paths[name] = folder / f"{name}.pth"
        torch.save(build_backbone(name).state_dict(), paths[name])
    return paths


@pytest.fixture(autouse=True, scope="session")
def lightning_logs_to_this_sessions_stderr():
    """Lightning's log handler keeps the stderr of the pytest session that imported it. A second session in the
    same process (mutmut runs one per mutant) finds that stream closed, and logging prints a traceback."""
    import logging
    import sys

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and getattr(handler.stream, "closed", False):
                handler.stream = sys.stderr  # not setStream(): it flushes the closed one first
    return None


@pytest.fixture(scope="session")
def trained_mlp(tmp_path_factory) -> Path:
    """A real run folder: the mlp trained 300 steps on the real Fashion-MNIST through fit.run (about 0.8 accuracy)."""
    import os

    from fashion_conv.fit import run

    if not (REAL_DATA / "fashion-mnist-test.csv").is_file() and not os.environ.get("CI"):
        pytest.skip("the real data is missing: run scripts/setup.sh first")  # on CI a failure: .ci/run prepares it
    root = tmp_path_factory.mktemp("trained")
    summary = run(
        ["--data.data_dir", str(REAL_DATA.parent), "--model.backbone", "mlp", "--trainer.max_epochs", "1",
         "--trainer.limit_train_batches", "300", "--trainer.default_root_dir", str(root),
         "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    return Path(summary["run_dir"])
