"""Atomic file writes: write beside the target, fsync, rename, so a kill never leaves half a file."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from fashion_conv.utils.errors import FashionConvError


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}  # the disk, not the data, is the problem


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so the final rename is atomic; created with the usual umask, unlike mkstemp's 0600.
    tmp_path = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        tmp_path.touch(exist_ok=False)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.errno not in _NO_ROOM:
            raise  # e.g. an HTTP error while downloading into the file: the caller's to explain
        raise WriteError(target, exc.strerror or str(exc)) from exc
    except RuntimeError as exc:  # torch.save reports a full disk as "PytorchStreamWriter failed writing file ..."
        if "write" not in str(exc):
            raise
        raise WriteError(target, str(exc).splitlines()[0]) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


class WriteError(FashionConvError, OSError):
    """A file could not be written (disk full, quota, read-only folder); its previous version, if any, is intact."""

    def __init__(self, target: Path, reason: str):
        super().__init__(f"{target}: cannot write it ({reason}); nothing was lost: any earlier {target.name} is intact")
        self.target = target


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))
