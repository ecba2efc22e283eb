"""The dataset's CSV layout (``label,pixel1,...,pixel784``): write it, read it strictly, cache the parse.

Reading validates the whole file before anything is returned and names the first problem by file,
line and column. The checks are vectorised over the raw bytes, so a clean 130 MB file costs about a
second; the parsed uint8 array is cached (beside the CSV, or in the user's cache folder when the data
folder is read-only) and reused only while the CSV's bytes are the ones that were parsed (see ``_read_cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_conv.utils.atomic import atomic_path
from fashion_conv.data.classes import CLASS_NAMES  # noqa: F401 (its home until the class names moved beside the DataModule)
from fashion_conv.utils.errors import DataError

N_PIXELS = 28 * 28
HEADER = ["label"] + [f"pixel{i}" for i in range(1, N_PIXELS + 1)]
PIXEL_HEADER = HEADER[1:]  # images without labels: a file to predict on
_COMMA, _NEWLINE, _CR = ord(","), ord("\n"), ord("\r")
_BOM = b"\xef\xbb\xbf"
_CHUNK_BYTES = 1 << 21  # 2 MB of text, about 1,000 rows


def write_csv(path: str | Path, labels: np.ndarray, images: np.ndarray) -> None:
    """Write labels (N,) and images (N, 28, 28) uint8 as the CSV layout, atomically."""
    # (column_stack takes labels of shape (N,) as a column too, and numpy reads any negative size as -1.)
    table = np.column_stack([labels.reshape(-1, 1), images.reshape(len(images), -1)]).astype(np.uint8)  # pragma: no mutate
    with atomic_path(path) as tmp:
        pd.DataFrame(table, columns=HEADER).to_csv(tmp, index=False, lineterminator="\n")  # pragma: no mutate
    # Keyed by the digest only: a file changed this instant has a stat that is not trusted yet (_RACY_NS).
    _write_cache(Path(path), table, _digest(Path(path).read_bytes()), None)


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and images (N, 28, 28), both uint8, from a validated CSV; cached after the first parse."""
    path = Path(path)
    table = _read_cache(path)
    if table is None:
        with open(path, "rb") as f:  # one read: the cache key is the digest of exactly the bytes parsed
            before = os.fstat(f.fileno())
            raw = f.read()
            stat = os.fstat(f.fileno())
        # (Parsing a second read, or trusting a stat taken across a write, differs only if the file changes while
        # it is read.)
        table = _parse(path, HEADER, raw)  # pragma: no mutate
        _write_cache(path, table, _digest(raw), stat if _same_file(before, stat) else None)  # pragma: no mutate
    return table[:, 0].copy(), table[:, 1:].reshape(-1, 28, 28)  # pragma: no mutate


def read_images_csv(path: str | Path) -> tuple[np.ndarray | None, np.ndarray]:
    """Labels (N,), or None for a file without the label column, and images (N, 28, 28) uint8; writes no cache.

    For predicting on a user's file: the header picks the layout, the checks are the same as ``parse_csv``'s.
    """
    path = Path(path)
    with open(path, "rb") as f:
        start = f.read(len(_BOM) + 8)  # pragma: no mutate
    if start.removeprefix(_BOM).startswith(b"pixel1,"):
        return None, _parse(path, PIXEL_HEADER).reshape(-1, 28, 28)  # pragma: no mutate
    table = parse_csv(path)
    return table[:, 0].copy(), table[:, 1:].reshape(-1, 28, 28)  # pragma: no mutate


def parse_csv(path: Path) -> np.ndarray:
    """Parse and validate; (N, 785) uint8. Raises DataError naming file, line and column."""
    return _parse(path, HEADER)


def _parse(path: Path, columns: list[str], raw: bytes | None = None) -> np.ndarray:
    """Parse and validate a file (or its ``raw`` bytes) whose header must be ``columns``; (N, len(columns)) uint8."""
    raw = path.read_bytes() if raw is None else raw
    if not raw.strip():
        raise DataError(path, f"file is empty; expected a header line {_spelled(columns)} and data rows")
    if raw.startswith(_BOM):  # harmless: written by some spreadsheet tools
        raw = raw[len(_BOM) :]
    if b"\r" in raw:  # CRLF line ends are harmless; a lone CR is not
        raw = raw.replace(b"\r\n", b"\n")
        if b"\r" in raw:
            pos = raw.index(b"\r")
            raise DataError(path, "stray carriage return inside a line", *_line_col(raw, pos))
    # No final newline, or blank lines at the end. (Always stripping and adding one is the same, with a copy.)
    if not raw.endswith(b"\n") or raw.endswith(b"\n\n"):  # pragma: no mutate
        raw = raw.rstrip(b"\n") + b"\n"
    header_end = raw.find(b"\n")
    _check_header(path, raw[:header_end].decode("utf-8", errors="replace"), columns)
    if header_end + 1 == len(raw):
        raise DataError(path, "header only, no data rows", line=2)
    return _parse_body(path, raw, header_end + 1, columns)


def _spelled(columns: list[str]) -> str:
    return f"'{columns[0]},{columns[1]},...,{columns[-1]}'"


def _check_header(path: Path, header: str, columns: list[str] = HEADER) -> None:
    cells = header.split(",")
    if cells == columns:
        return
    if cells and all(c.strip().lstrip("-").replace(".", "", 1).isdigit() for c in cells):
        raise DataError(path, f"missing header: the first line holds numbers; expected {_spelled(columns)}", line=1)
    if len(cells) != len(columns):
        hint = " (label and 784 pixels)" if len(cells) == N_PIXELS and columns == HEADER else ""
        raise DataError(path, f"header has {len(cells)} columns, expected {len(columns)}{hint}", line=1)
    if cells[-1] == "label" and columns == HEADER:
        raise DataError(path, "'label' is the last column; expected it first: 'label,pixel1,...,pixel784'", line=1)
    col = next(i for i, (a, b) in enumerate(zip(cells, columns)) if a != b)
    raise DataError(path, f"header column is '{cells[col]}', expected '{columns[col]}'", line=1, column=col + 1)


def _parse_body(path: Path, raw: bytes, offset: int, columns: list[str] = HEADER) -> np.ndarray:
    """Parse ``raw[offset:]`` (whole lines, ending with a newline) in chunks of lines, so that every
    vectorised pass over a chunk runs in the CPU caches."""
    table = np.empty((raw.count(b"\n", offset), len(columns)), dtype=np.uint8)
    start, row, first_line = offset, 0, _line_of(raw, offset)
    while start < len(raw):
        # The chunk ends at a line end (raw ends with one). Other whole-line boundaries give the same table.
        end = raw.find(b"\n", min(start + _CHUNK_BYTES, len(raw)) - 1) + 1  # pragma: no mutate
        chunk = _parse_chunk(path, raw, start, end, first_line + row, columns)
        table[row : row + len(chunk)] = chunk
        start, row = end, row + len(chunk)
    return table


def _parse_chunk(path: Path, raw: bytes, start: int, end: int, first_line: int, columns: list[str]) -> np.ndarray:
    """Lines ``raw[start:end]``: check the structure on the bytes, decode the 1-3 digit cells, check ranges.

    Every byte that is not a digit ends a cell; those bytes must be commas or newlines. The value of a cell
    is read from the 1-3 digits before its end, so the passes over the bytes are few and the rest runs
    per cell.
    """
    b = np.frombuffer(raw, dtype=np.uint8, count=end - start, offset=start)
    digit = b - np.uint8(ord("0"))  # non-digits wrap to values > 9
    ends = np.flatnonzero(digit > 9)  # each cell ends at a non-digit; the chunk's last byte is a newline
    enders = b[ends]
    bad = np.flatnonzero((enders != _COMMA) & (enders != _NEWLINE))
    if bad.size:
        _fail_cell(path, raw, start + int(ends[bad[0]]), False, columns)
    ends = ends.astype(np.int32)
    widths = np.empty_like(ends)
    widths[0] = ends[0]
    np.subtract(ends[1:], ends[:-1], out=widths[1:])
    widths[1:] -= 1
    if (widths - 1).view(np.uint32).max() > 2:  # 0 wraps to the largest uint32
        i = int(np.flatnonzero((widths == 0) | (widths > 3))[0])
        empty = bool(widths[i] == 0)  # else more than 3 digits
        _fail_cell(path, raw, start + int(ends[i]) - (not empty), empty, columns)
    ends_line = np.flatnonzero(enders == _NEWLINE)
    cells_per_row = np.diff(ends_line, prepend=-1)
    wrong = np.flatnonzero(cells_per_row != len(columns))
    if wrong.size:
        i = int(wrong[0])
        raise DataError(path, f"row has {cells_per_row[i]} columns, expected {len(columns)}", line=first_line + i)
    # Decode: the units digit just before each cell's end, tens and hundreds where the cell is wide enough.
    # (Indices before the chunk wrap to its end; those cells are one digit wide, so the digits are masked.)
    values = digit[ends - 1].astype(np.uint16)
    tens = digit[ends - 2]
    tens *= widths >= 2
    values += tens.astype(np.uint16) * np.uint16(10)
    hundreds = digit[ends - 3]
    hundreds *= widths >= 3
    values += hundreds.astype(np.uint16) * np.uint16(100)
    table = values.reshape(-1, len(columns))  # pragma: no mutate
    labels_bad = np.flatnonzero(table[:, 0] > 9) if columns[0] == "label" else []
    if len(labels_bad):
        r = int(labels_bad[0])
        raise DataError(path, f"label is {table[r, 0]}, expected an integer in 0-9", line=first_line + r, column=1)
    if table.max() > 255:
        r, c = np.unravel_index(int(np.argmax(table > 255)), table.shape)
        raise DataError(path, f"{columns[c]} is {table[r, c]}, expected an integer in 0-255", line=first_line + int(r), column=int(c) + 1)
    return table


def _fail_cell(path: Path, raw: bytes, pos: int, empty: bool, columns: list[str] = HEADER) -> None:
    """Raise for the cell that holds byte ``pos`` of ``raw`` (or, for an ``empty`` cell, ends there), quoting it."""
    if empty:
        start = end = pos
        if raw[pos] == _NEWLINE and raw[pos - 1] == _NEWLINE:
            raise DataError(path, f"empty line; expected a row of {len(columns)} integers", line=_line_of(raw, pos))
    else:
        # (Searches from byte 0, None or 1 are the same: byte 0 is the header's first letter, never , or a newline.)
        start = max(raw.rfind(b",", 0, pos), raw.rfind(b"\n", 0, pos)) + 1  # pragma: no mutate
        end = min(i for i in (raw.find(b",", start), raw.find(b"\n", start)) if i >= 0)  # pragma: no mutate
    line, column = _line_col(raw, start)
    name = columns[column - 1] if column <= len(columns) else f"column {column}"
    found = "empty" if start == end else repr(raw[start:end].decode("utf-8", errors="replace"))
    expected = "0-9" if name == "label" else "0-255"
    raise DataError(path, f"{name} is {found}, expected an integer in {expected}", line=line, column=column)


def _line_of(raw: bytes, pos: int) -> int:
    return raw.count(b"\n", 0, pos) + 1


def _line_col(raw: bytes, pos: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, pos) + 1  # pragma: no mutate
    return _line_of(raw, pos), raw.count(b",", line_start, pos) + 1


# ---- the parse cache ----
# A cache file is a flat uint8 .npy: a 64-byte stamp, then the (N, 785) table. The stamp holds the CSV's stat
# identity (size, mtime, ctime, inode, device; zeros when not trusted), the BLAKE2b digest of the CSV bytes that
# were parsed, the CRC-32 of the table and a format tag. The digest is the key; the stat identity only lets a
# warm start skip re-hashing: ctime changes with every write and cannot be set back (``cp -p``, ``rsync -t``
# and ``touch -r`` restore the mtime only). A stat taken within _RACY_NS of the file's last change is not
# trusted (a write in the same clock tick would leave it unchanged: git's "racy" rule), so it is re-hashed.
_STAMP_BYTES, _TAG = 64, b"FCC1"
_RACY_NS = 2_000_000_000


def _cache_paths(csv_path: Path) -> list[Path]:
    """Beside the CSV, then the user's cache folder (for read-only data folders), keyed by the CSV's full path."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fashion_conv"
    where = hashlib.blake2b(str(csv_path.resolve()).encode(), digest_size=8).hexdigest()
    return [csv_path.parent / ".cache" / f"{csv_path.name}.npy", user / f"{where}-{csv_path.name}.npy"]


def _cache_path(csv_path: Path) -> Path:
    return _cache_paths(csv_path)[0]


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def _identity(stat: os.stat_result | None) -> np.ndarray:
    """(5,) int64: what changes when a file's bytes may have changed; zeros for none or a racy one."""
    if stat is None or time.time_ns() - stat.st_ctime_ns < _RACY_NS:
        return np.zeros(5, dtype=np.int64)  # pragma: no mutate
    return np.array(
        [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev],
        dtype=np.int64,  # pragma: no mutate
    )


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """No write between two stats of one open file (a write during the parse leaves no trusted stat)."""
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def _write_cache(csv_path: Path, table: np.ndarray, digest: bytes, stat: os.stat_result | None) -> None:
    """Write the cache to the first writable place; a read-only data folder is not an error (the next start parses)."""
    for cache in _cache_paths(csv_path):
        try:
            _save_cache(cache, table, digest, stat)
            return
        except OSError:
            continue
    print(f"note: no writable place for the parse cache of {csv_path}; it is parsed again next time", file=sys.stderr)


def _save_cache(cache: Path, table: np.ndarray, digest: bytes, stat: os.stat_result | None) -> None:
    """Write one cache file, atomically: the stamp (stat identity, digest, CRC-32 of the table, tag), then the table."""
    crc = np.array([zlib.crc32(table)], dtype="<u4").view(np.uint8)
    stamp = np.concatenate([_identity(stat).view(np.uint8), np.frombuffer(digest + crc.tobytes() + _TAG, np.uint8)])
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.save(
            f, np.concatenate([stamp, table.ravel()]),
            allow_pickle=False,  # pragma: no mutate
        )  # fmt: skip


def _read_cache(csv_path: Path) -> np.ndarray | None:
    """The cached table if it is intact (CRC-32, labels 0-9) and was parsed from the CSV's current bytes; else None."""
    digest = None
    for cache in _cache_paths(csv_path):
        try:
            flat = np.load(cache, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            continue  # missing or unreadable: rebuilt from the CSV
        if flat.dtype != np.uint8 or flat.ndim != 1 or flat.size <= _STAMP_BYTES or (flat.size - _STAMP_BYTES) % len(HEADER):
            continue
        stamp, body = flat[:_STAMP_BYTES], flat[_STAMP_BYTES:]
        if stamp[60:].tobytes() != _TAG or zlib.crc32(body) != int(stamp[56:60].view("<u4")[0]):
            continue  # damaged (a flipped byte): never used
        table = body.reshape(-1, len(HEADER))  # pragma: no mutate
        if table[:, 0].max() > 9:
            continue
        identity = stamp[:40].view(np.int64)
        if identity.any() and np.array_equal(identity, _identity(csv_path.stat())):
            return table
        if digest is None:
            with open(csv_path, "rb") as f:
                digest, stat = _digest(f.read()), os.fstat(f.fileno())
        if stamp[40:56].tobytes() == digest:
            if _identity(stat).any():  # a stat old enough to trust, and not the stamped one: stamp it, skip hashing next time
                # In the file that was read: a first place that cannot be written must not send every read to
                # rewrite the second while the first's old stamp keeps serving (it is hashed each time, as before).
                with contextlib.suppress(OSError):
                    _save_cache(cache, table, digest, stat)
            return table
    return None
