"""The four official Fashion-MNIST IDX files: where to find them, how to check them, how to read them.

Sources, in order: ``<data_dir>/raw`` (also torchvision's ``FashionMNIST/raw`` layout, gzipped or not),
the system copy of Debian's ``dataset-fashion-mnist`` package, then a download from the official mirror.
Every file is checked whatever its source: IDX magic number, shape, size, count and the MD5 of its
content. Debian re-compresses the archives, so the check is on the decompressed bytes (the published
MD5s of the un-gzipped files), which holds for every source.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fashion_conv.utils.atomic import atomic_path
from fashion_conv.utils.errors import DataError, FashionConvError

MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_HINT = (
    "To get the data: on Debian/Ubuntu run `sudo apt-get install -y dataset-fashion-mnist` (installs the files "
    f"under {SYSTEM_DIR}), or put the four files (gzipped or not) into {{raw_dir}}, or allow downloads from {{mirror}}."
)


class IdxSpec(NamedTuple):
    """What one IDX file must be: images (N, 28, 28) or labels (N,), with the MD5 of its decompressed bytes."""

    ndim: int
    count: int
    md5: str | None


OFFICIAL: dict[str, IdxSpec] = {
    "train-images-idx3-ubyte": IdxSpec(3, 60000, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": IdxSpec(1, 60000, "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": IdxSpec(3, 10000, "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": IdxSpec(1, 10000, "15d484375f8d13e6eb1aabb0c3f46965"),
}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def expected_size(spec: IdxSpec) -> int:
    """Bytes of the decompressed file: the header, then one byte per label or 28 x 28 per image."""
    return 4 + 4 * spec.ndim + spec.count * (28 * 28 if spec.ndim == 3 else 1)


def read_idx(path: Path, spec: IdxSpec) -> np.ndarray:
    """Read and check one IDX file (gzipped or not); uint8 array (N, 28, 28) or (N,).

    At most one byte more than the expected size is ever read or decompressed, so a small file that would
    decompress to gigabytes (a gzip bomb) is refused at that size.
    """
    cap = expected_size(spec)
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            data = f.read(cap + 1)  # GzipFile.read(n) decompresses only what it returns
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(path, f"truncated or corrupt gzip archive ({exc})") from None
    if len(data) > cap:
        raise DataError(path, f"more than the expected {cap} bytes{' after decompression' if gzipped else ''}; refused unread")
    want_magic = 0x0800 | spec.ndim
    if len(data) < 4 + 4 * spec.ndim:
        raise DataError(path, f"too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != want_magic:
        raise DataError(path, f"IDX magic number is 0x{magic:08x}, expected 0x{want_magic:08x} (unsigned bytes, {spec.ndim} dims)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(spec.ndim)]
    if spec.ndim == 3 and dims[1:] != [28, 28]:
        raise DataError(path, f"images are {dims[1]}x{dims[2]}, expected 28x28")
    if dims[0] != spec.count:
        raise DataError(path, f"header says {dims[0]} items, expected {spec.count}")
    header = 4 + 4 * spec.ndim
    want_size = header + int(np.prod(dims))
    if len(data) != want_size:
        raise DataError(path, f"{len(data)} bytes after decompression, expected {want_size} (truncated or padded)")
    if spec.md5 is not None:
        md5 = hashlib.md5(data).hexdigest()
        if md5 != spec.md5:
            raise DataError(path, f"content MD5 is {md5}, expected {spec.md5}: a corrupt or different file")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def candidates(folder: Path, name: str) -> list[Path]:
    """Where a file may lie in a folder: our layout and torchvision's, gzipped or not."""
    return [d / f for d in (folder, folder / "FashionMNIST" / "raw") for f in (f"{name}.gz", name)]


def download(url: str, dest: Path, timeout: float = 30.0, max_bytes: int | None = None) -> None:
    """Fetch ``url`` into ``dest`` atomically; a failed, partial or oversized transfer leaves nothing behind."""
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            got = 0
            while chunk := response.read(1 << 20):
                got += len(chunk)
                if max_bytes is not None and got > max_bytes:
                    raise ValueError(f"more than {max_bytes} bytes; stopped")
                out.write(chunk)


def load_raw(
    raw_dir: str | Path,
    specs: dict[str, IdxSpec] = OFFICIAL,
    system_dir: str | Path | None = SYSTEM_DIR,
    mirror: str | None = None,
) -> dict[str, np.ndarray]:
    """Find, check and read every file of ``specs``; raise one error listing every attempt if any is missing.

    ``mirror`` defaults to ``$FASHION_CONV_MIRROR`` or the official mirror; pass ``""`` to never download.
    """
    raw_dir = Path(raw_dir)
    if mirror is None:
        mirror = os.environ.get("FASHION_CONV_MIRROR", MIRROR)
    arrays, tried = {}, []
    for name, spec in specs.items():
        places = candidates(raw_dir, name) + (candidates(Path(system_dir), name) if system_dir else [])
        for path in places:
            if not path.is_file():
                continue
            try:
                arrays[name] = read_idx(path, spec)
                break
            except DataError as exc:
                tried.append(f"  {exc}")
        else:
            if mirror:
                url = mirror.rstrip("/") + f"/{name}.gz"
                dest = raw_dir / f"{name}.gz"
                try:
                    download(url, dest, max_bytes=expected_size(spec) + (1 << 20))  # gzip never grows data by 1 MB
                    arrays[name] = read_idx(dest, spec)
                    continue
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    tried.append(f"  {url}: download failed ({exc})")
                except DataError as exc:
                    dest.unlink(missing_ok=True)  # never keep a file that failed its checks
                    tried.append(f"  {url}: downloaded file rejected: {exc.problem}")
            if not any(p.is_file() for p in places):
                tried.append(f"  {name}: not found in {raw_dir}" + (f" nor {system_dir}" if system_dir else ""))
    missing = [n for n in specs if n not in arrays]
    if missing:
        hint = APT_HINT.format(raw_dir=raw_dir, mirror=mirror or MIRROR)
        raise FashionConvError(
            f"Fashion-MNIST files missing or unusable: {', '.join(missing)}.\nTried:\n" + "\n".join(tried) + f"\n{hint}"
        )
    return arrays
