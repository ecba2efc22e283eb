"""The CSV reader: exact round trip, a cache that follows the file, and one clear error per bad input."""

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_arrays
from fashion_conv.data.csvio import HEADER, _cache_path, _write_cache, read_csv, write_csv
from fashion_conv.utils.errors import DataError

HEADER_LINE = ",".join(HEADER)


def row(label="3", pixels=None) -> str:
    pixels = pixels or ["0"] * 784
    return ",".join([label, *pixels])


def write(tmp_path, text: str | bytes):
    path = tmp_path / "bad.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_round_trip(tmp_path):
    labels, images = tiny_arrays(30)
    path = tmp_path / "d.csv"
    write_csv(path, labels, images)
    assert path.read_text().splitlines()[0] == HEADER_LINE
    got_labels, got_images = read_csv(path)
    assert np.array_equal(got_labels, labels) and np.array_equal(got_images, images)
    assert got_images.dtype == np.uint8 and got_images.shape == (30, 28, 28)


def test_cache_is_used_and_rebuilt_when_the_csv_changes(tmp_path):
    labels, images = tiny_arrays(20)
    path = tmp_path / "d.csv"
    path.write_text("\n".join([HEADER_LINE] + [row(str(label), [str(v) for v in im.ravel()]) for label, im in zip(labels, images)]) + "\n")
    assert not _cache_path(path).exists()
    read_csv(path)
    assert _cache_path(path).exists()
    # Proof the second read comes from the cache: poison the cache's labels, keep its key (the CSV's digest).
    flat = np.load(_cache_path(path))
    table = flat[64:].reshape(-1, len(HEADER)).copy()
    table[:, 0] = 7
    _write_cache(path, table, flat[40:56].tobytes(), None)
    assert (read_csv(path)[0] == 7).all()
    # Editing the CSV (new size and mtime) invalidates the cache.
    path.write_text(HEADER_LINE + "\n" + row("5") + "\n")
    labels2, images2 = read_csv(path)
    assert labels2.tolist() == [5] and images2.shape == (1, 28, 28)


def test_corrupt_cache_is_rebuilt(tmp_path):
    path = write(tmp_path, HEADER_LINE + "\n" + row("2") + "\n")
    read_csv(path)
    _cache_path(path).write_bytes(b"garbage")
    assert read_csv(path)[0].tolist() == [2]


def test_harmless_variants_are_accepted(tmp_path):
    body = HEADER_LINE + "\r\n" + row("1") + "\r\n" + row("2") + "\r\n\r\n"
    path = write(tmp_path, b"\xef\xbb\xbf" + body.encode())  # BOM, CRLF, trailing blank line
    labels, images = read_csv(path)
    assert labels.tolist() == [1, 2] and images.shape == (2, 28, 28)
    path = write(tmp_path, HEADER_LINE + "\n" + row("4"))  # no final newline
    assert read_csv(path)[0].tolist() == [4]


def pixels_with(col: int, value: str) -> list[str]:
    cells = ["0"] * 784
    cells[col - 2] = value  # col is the 1-based CSV column; pixel1 is column 2
    return cells


BAD = [
    ("", None, None, "file is empty"),
    (HEADER_LINE + "\n", 2, None, "header only"),
    (row("3") + "\n", 1, None, "missing header"),
    (",".join(HEADER[1:] + ["label"]) + "\n" + row() + "\n", 1, None, "'label' is the last column"),
    (",".join(HEADER[1:]) + "\n", 1, None, "header has 784 columns, expected 785"),
    (HEADER_LINE.replace("pixel7,", "pixelX,") + "\n" + row() + "\n", 1, 8, "header column is 'pixelX', expected 'pixel7'"),
    (HEADER_LINE + "\n" + row() + "\n" + row("3.0") + "\n", 3, 1, "label is '3.0', expected an integer in 0-9"),
    (HEADER_LINE + "\n" + row("10") + "\n", 2, 1, "label is 10, expected an integer in 0-9"),
    (HEADER_LINE + "\n" + row("1", pixels_with(5, "NaN")) + "\n", 2, 5, "pixel4 is 'NaN', expected an integer in 0-255"),
    (HEADER_LINE + "\n" + row("1", pixels_with(300, "256")) + "\n", 2, 300, "pixel299 is 256, expected an integer in 0-255"),
    (HEADER_LINE + "\n" + row("1", pixels_with(2, "-1")) + "\n", 2, 2, "pixel1 is '-1', expected an integer in 0-255"),
    (HEADER_LINE + "\n" + row("1", pixels_with(9, "abc")) + "\n", 2, 9, "pixel8 is 'abc', expected"),
    (HEADER_LINE + "\n" + row("1", pixels_with(9, "1000")) + "\n", 2, 9, "pixel8 is '1000', expected"),
    (HEADER_LINE + "\n" + row("1", pixels_with(785, "")) + "\n", 2, 785, "pixel784 is empty"),
    (HEADER_LINE + "\n" + row("") + "\n", 2, 1, "label is empty"),
    (HEADER_LINE + "\n" + row() + "\n\n" + row() + "\n", 3, None, "empty line"),
    (HEADER_LINE + "\n" + row() + "\n" + row() + ",0\n", 3, None, "row has 786 columns, expected 785"),
    (HEADER_LINE + "\n" + row()[:-2] + "\n", 2, None, "row has 784 columns, expected 785"),
    (HEADER_LINE + "\n" + row() + "\r" + row() + "\n", 2, 785, "stray carriage return"),
]


@pytest.mark.parametrize("text,line,column,problem", BAD, ids=[b[3][:40] for b in BAD])
def test_bad_input_names_file_line_column_and_problem(tmp_path, text, line, column, problem):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_csv(path)
    err = info.value
    assert str(path) in str(err) and re.search(re.escape(problem), str(err)), str(err)
    assert (err.line, err.column) == (line, column), str(err)
    assert not _cache_path(path).exists()  # nothing half-loaded or cached


def test_error_deep_in_a_large_file_is_located(tmp_path):
    rows = [row(str(i % 10)) for i in range(2000)]
    rows[1500] = row("1", pixels_with(400, "x"))
    path = write(tmp_path, HEADER_LINE + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        read_csv(path)
    assert (info.value.line, info.value.column) == (1502, 400)


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    labels, images = tiny_arrays(5)
    write_csv(tmp_path / "d.csv", labels, images)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [] and os.path.getsize(tmp_path / "d.csv") > 0
    # atomic: a write that dies half-way leaves the previous file whole, and no temporary file
    before = (tmp_path / "d.csv").read_bytes()

    def dying_to_csv(self, path, **kwargs):
        Path(path).write_text("label,pixel1,pix")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", dying_to_csv)
    with pytest.raises(KeyboardInterrupt):
        write_csv(tmp_path / "d.csv", *tiny_arrays(7))
    assert (tmp_path / "d.csv").read_bytes() == before
    assert [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


# ---- exact messages and edge cases (mutation testing, docs/mutation.md) ----

EXACT = [
    (b"", None, None, "file is empty; expected a header line 'label,pixel1,...,pixel784' and data rows"),
    ((HEADER_LINE + "\n").encode(), 2, None, "header only, no data rows"),
    ((",".join(HEADER[1:] + ["label"]) + "\n" + row() + "\n").encode(), 1, None,
     "'label' is the last column; expected it first: 'label,pixel1,...,pixel784'"),
    ((",".join(HEADER[1:]) + "\n").encode(), 1, None, "header has 784 columns, expected 785 (label and 784 pixels)"),
    (b"a,b,c\n", 1, None, "header has 3 columns, expected 785"),
    # Numbers: an optional minus and at most one decimal point; anything else is a header with wrong columns.
    (b"-1,0.5\n", 1, None, "missing header: the first line holds numbers; expected 'label,pixel1,...,pixel784'"),
    (b"1.2.3,4\n", 1, None, "header has 2 columns, expected 785"),
    (b"1-,4\n", 1, None, "header has 2 columns, expected 785"),
    (b"X1,4\n", 1, None, "header has 2 columns, expected 785"),
    (HEADER_LINE.replace("pixel1,", "pixel1\xff,").encode("latin-1") + b"\n", 1, 2,
     "header column is 'pixel1\ufffd', expected 'pixel1'"),
    ((HEADER_LINE + "\n" + row() + "\n" + row() + "\n" + row("12") + "\n").encode(), 4, 1, "label is 12, expected an integer in 0-9"),
    ((HEADER_LINE + "\n" + row() + "\n" + row("1", pixels_with(3, "300")) + "\n").encode(), 3, 3,
     "pixel2 is 300, expected an integer in 0-255"),
    ((HEADER_LINE + "\n" + row("1", pixels_with(3, "255")[:2] + ["256"] + ["0"] * 781) + "\n").encode(), 2, 4,
     "pixel3 is 256, expected an integer in 0-255"),  # the first value above 255, not the first 255
    ((HEADER_LINE + "\n" + row("1", pixels_with(5, "1:")) + "\n").encode(), 2, 5, "pixel4 is '1:', expected an integer in 0-255"),
    ((HEADER_LINE + "\n").encode() + row("1", pixels_with(5, "\xff")).encode("latin-1") + b"\n", 2, 5,
     "pixel4 is '\ufffd', expected an integer in 0-255"),
    # The quoted cell ends at its comma or line end, also for the last cell of a row that is not the last.
    ((HEADER_LINE + "\n" + row("1", pixels_with(785, "x")) + "\n" + row() + "\n").encode(), 2, 785,
     "pixel784 is 'x', expected an integer in 0-255"),
    ((HEADER_LINE + "\n" + row() + "\n" + row("1", pixels_with(785, "x")) + "\n").encode(), 3, 785,
     "pixel784 is 'x', expected an integer in 0-255"),
    ((HEADER_LINE + "\n" + row() + ",x\n").encode(), 2, 786, "column 786 is 'x', expected an integer in 0-255"),
    # No final newline: only newlines are added or stripped, not spaces or other characters.
    ((HEADER_LINE + "\n" + row() + " ").encode(), 2, 785, "pixel784 is '0 ', expected an integer in 0-255"),
    ((HEADER_LINE + "\n" + row() + "X").encode(), 2, 785, "pixel784 is '0X', expected an integer in 0-255"),
    # The first stray carriage return is named, by line and column.
    ((HEADER_LINE + "\n" + row() + "\n0,\r5\n" + row() + "\r,\n").encode(), 3, 2, "stray carriage return inside a line"),
    (b"\n,\r1\n", 2, 2, "stray carriage return inside a line"),
    (b"a,\n\rb\n", 2, 1, "stray carriage return inside a line"),
]


@pytest.mark.parametrize("raw,line,column,problem", EXACT, ids=[f"{i}-{e[3][:30].encode('ascii', 'replace').decode()}" for i, e in enumerate(EXACT)])
def test_bad_input_exact_message(tmp_path, raw, line, column, problem):
    path = write(tmp_path, raw)
    with pytest.raises(DataError) as info:
        read_csv(path)
    assert (info.value.problem, info.value.line, info.value.column) == (problem, line, column)


def test_pixel_255_is_accepted(tmp_path):
    path = write(tmp_path, HEADER_LINE + "\n" + row("9", ["255"] * 784) + "\n")
    labels, images = read_csv(path)
    assert labels.tolist() == [9] and (images == 255).all()


def test_many_chunks_parse_like_one(tmp_path, monkeypatch):
    import fashion_conv.data.csvio as csvio

    labels, images = tiny_arrays(40)
    path = tmp_path / "d.csv"
    path.write_text("\n".join([HEADER_LINE] + [row(str(label), [str(v) for v in im.ravel()]) for label, im in zip(labels, images)]) + "\n")
    monkeypatch.setattr(csvio, "_CHUNK_BYTES", 5000)  # about 2 rows a chunk
    table = csvio.parse_csv(path)
    assert np.array_equal(table[:, 0], labels) and np.array_equal(table[:, 1:].reshape(-1, 28, 28), images)
    lines = path.read_text().splitlines()
    lines[30] = row("11")  # line 31, in a later chunk
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        csvio.parse_csv(path)
    assert (info.value.problem, info.value.line, info.value.column) == ("label is 11, expected an integer in 0-9", 31, 1)


def test_read_images_csv_picks_the_layout_by_header(tmp_path):
    from fashion_conv.data.csvio import read_images_csv

    labels, images = tiny_arrays(3)
    pixels_only = ",".join(HEADER[1:]) + "\n" + "\n".join(",".join(str(v) for v in im.ravel()) for im in images) + "\n"
    path = write(tmp_path, b"\xef\xbb\xbf" + pixels_only.encode())  # a spreadsheet's BOM before 'pixel1,'
    got_labels, got_images = read_images_csv(path)
    assert got_labels is None and np.array_equal(got_images, images)
    path = write(tmp_path, "\n".join([HEADER_LINE] + [row(str(label), [str(v) for v in im.ravel()]) for label, im in zip(labels, images)]) + "\n")
    got_labels, got_images = read_images_csv(path)
    assert np.array_equal(got_labels, labels) and np.array_equal(got_images, images)


def test_cache_stamp_holds_the_stat_of_an_unchanged_file(tmp_path, monkeypatch):
    import fashion_conv.data.csvio as csvio

    monkeypatch.setattr(csvio, "_RACY_NS", -10**18)  # trust every stat (normally only those older than 2 s)
    path = write(tmp_path, HEADER_LINE + "\n" + row("2") + "\n")
    read_csv(path)
    st = path.stat()
    stamp = np.load(_cache_path(path))[:40].view(np.int64).tolist()
    assert stamp == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def test_parse_reads_the_bytes_it_is_given(tmp_path):
    from fashion_conv.data.csvio import _parse

    path = write(tmp_path, HEADER_LINE + "\n" + row("1") + "\n")
    # read_csv hashes and parses one read of the file: the table must come from those bytes, not a second read.
    table = _parse(path, HEADER, (HEADER_LINE + "\n" + row("7") + "\n").encode())
    assert table[:, 0].tolist() == [7]
