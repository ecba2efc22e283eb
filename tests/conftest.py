"""Shared fixtures: tiny Fashion-MNIST-shaped data written by the tests themselves."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from fashion_conv.csvio import write_csv
from fashion_conv.idx import IdxSpec

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
