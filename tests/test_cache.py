"""The CSV parse cache serves only the bytes on disk: edits with the mtime put back, a file replaced during the
parse, a damaged cache file and a read-only data folder all give the CSV's own rows."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tiny_arrays
from fashion_conv.data import csvio
from fashion_conv.data.csvio import read_csv, write_csv
from mounts import PYTHON, run_with_mounts


@pytest.fixture
def csv_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    path = tmp_path / "processed" / "fashion-mnist-train.csv"
    write_csv(path, *tiny_arrays(30))
    return path


def forbid_parsing(monkeypatch) -> None:
    """From here on, a read that parses the CSV fails: it must be served by a cache."""

    def no_parse(*args):
        raise AssertionError("parsed the CSV although the user's cache holds it")

    monkeypatch.setattr(csvio, "_parse", no_parse)


def edit_label_in_place(path: Path, row: int, digit: bytes) -> None:
    """Overwrite the one-digit label of ``row`` (1-based, after the header) and put the mtime back, as ``touch -r`` does."""
    st = path.stat()
    with open(path, "r+b") as f:
        lines = f.read().split(b"\n")
        offset = sum(len(line) + 1 for line in lines[:row])
        f.seek(offset)
        f.write(digit)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("trusted_stat", [False, True], ids=["fresh-file", "old-file"])
def test_an_edit_with_the_mtime_put_back_is_not_served_from_the_cache(csv_file, monkeypatch, trusted_stat):
    if trusted_stat:  # a file older than the racy window: the stat identity is trusted, so only ctime can tell
        monkeypatch.setattr(csvio, "_RACY_NS", 0)
        write_csv(csv_file, *tiny_arrays(30))
        time.sleep(0.05)  # past the kernel's coarse clock tick, so the edit gets a later ctime
    labels, _ = read_csv(csv_file)
    new = (int(labels[0]) + 1) % 10
    edit_label_in_place(csv_file, 1, str(new).encode())
    assert read_csv(csv_file)[0][0] == new
    assert read_csv(csv_file)[0][0] == new  # and the rebuilt cache holds it


def test_a_file_replaced_during_the_parse_never_gets_the_old_rows_under_its_key(csv_file, monkeypatch):
    other = csv_file.with_name("other.csv")
    write_csv(other, *tiny_arrays(30, seed=5))
    parse = csvio._parse

    def parse_then_replace(*args):
        table = parse(*args)
        os.replace(other, csv_file)  # another process swaps the file in while this one is parsing
        return table

    monkeypatch.setattr(csvio, "_parse", parse_then_replace)
    (csv_file.parent / ".cache" / f"{csv_file.name}.npy").unlink()
    old_labels, _ = read_csv(csv_file)
    monkeypatch.undo()
    labels, images = read_csv(csv_file)
    want_labels, want_images = tiny_arrays(30, seed=5)
    assert not np.array_equal(old_labels, want_labels)
    assert np.array_equal(labels, want_labels) and np.array_equal(images, want_images)


@pytest.mark.parametrize("where", ["pixel", "label"])
def test_a_damaged_cache_is_detected_and_rebuilt(csv_file, where):
    cache = csv_file.parent / ".cache" / f"{csv_file.name}.npy"
    want = read_csv(csv_file)
    raw = bytearray(cache.read_bytes())
    first_row = len(raw) - 30 * 785  # the .npy header and our 64-byte stamp come first
    pos = first_row + (5 if where == "pixel" else 0)
    raw[pos] = 200  # a label of 200 used to reach cross_entropy
    cache.write_bytes(bytes(raw))
    labels, images = read_csv(csv_file)
    assert np.array_equal(labels, want[0]) and np.array_equal(images, want[1])
    assert cache.read_bytes()[pos] != 200  # rebuilt


@pytest.mark.parametrize("label, served", [(9, True), (10, False), (200, False)])
def test_a_cache_with_valid_checksum_but_a_bad_label_is_refused(csv_file, label, served):
    """A cache written wrongly (not damaged after writing) still never serves a label outside 0-9 (here the
    cache's row 0 differs from the CSV's, so the label read shows which one served)."""
    labels, images = read_csv(csv_file)
    table = np.column_stack([labels, images.reshape(30, -1)]).astype(np.uint8)
    table[0, 0] = label
    with open(csv_file, "rb") as f:
        raw, stat = f.read(), os.fstat(f.fileno())
    csvio._write_cache(csv_file, table, csvio._digest(raw), stat)
    assert read_csv(csv_file)[0][0] == (label if served else labels[0])


def test_an_old_enough_file_is_served_by_its_stat_without_hashing(csv_file, monkeypatch):
    """Just written, a CSV's stat is not trusted (racy), so the cache is keyed by the digest alone; once the file
    is old enough the next read stamps its stat, and later reads skip hashing the CSV."""
    want = read_csv(csv_file)
    monkeypatch.setattr(csvio, "_RACY_NS", 0)  # from now on the file counts as old enough
    hashed, digest = [], csvio._digest
    monkeypatch.setattr(csvio, "_digest", lambda raw: hashed.append(len(raw)) or digest(raw))
    for _ in range(3):
        labels, images = read_csv(csv_file)
        assert np.array_equal(labels, want[0]) and np.array_equal(images, want[1])
    assert hashed == [csv_file.stat().st_size]  # once, by the first read, which stamped the stat


def test_a_touched_file_is_hashed_once_then_served_by_its_new_stat(csv_file, monkeypatch):
    """Same bytes, new mtime (a copy, a checkout): the stamped stat no longer matches, so one read hashes the CSV,
    finds the digest unchanged and stamps the new stat; the reads after it skip hashing again."""
    want = read_csv(csv_file)
    monkeypatch.setattr(csvio, "_RACY_NS", 0)
    read_csv(csv_file)  # stamps the stat
    hashed, digest = [], csvio._digest
    monkeypatch.setattr(csvio, "_digest", lambda raw: hashed.append(len(raw)) or digest(raw))
    later = csv_file.stat().st_mtime_ns + 5_000_000_000
    os.utime(csv_file, ns=(later, later))
    for _ in range(3):
        labels, images = read_csv(csv_file)
        assert np.array_equal(labels, want[0]) and np.array_equal(images, want[1])
    assert hashed == [csv_file.stat().st_size]


@pytest.mark.parametrize("beside", ["missing", "not a table", "2-D", "stamp only", "damaged", "label 10"])
def test_the_users_cache_serves_when_the_one_beside_the_csv_is_missing_or_unusable(csv_file, monkeypatch, beside):
    """Two places are tried in turn (beside the CSV, then the user's cache folder): a missing or unusable first
    one moves on to the second, which serves the table without a parse."""
    want = read_csv(csv_file)
    first, second = csvio._cache_paths(csv_file)
    second.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(first, second)
    if beside == "missing":
        first.unlink()
    elif beside in ("damaged", "label 10"):
        flat = np.load(first)
        body = flat[csvio._STAMP_BYTES :]
        if beside == "damaged":
            body[100] ^= 1  # a flipped bit: the CRC no longer matches
        else:
            body[0] = 10  # the first row's label, with the CRC made to match: written wrongly, not damaged
            flat[56:60] = np.array([zlib.crc32(body)], dtype="<u4").view(np.uint8)
        np.save(first, flat, allow_pickle=False)
    else:
        bad = {"not a table": np.zeros(100, np.float32), "2-D": np.zeros((2, 64 + 785), np.uint8), "stamp only": np.zeros(64, np.uint8)}
        np.save(first, bad[beside], allow_pickle=False)

    forbid_parsing(monkeypatch)
    labels, images = read_csv(csv_file)
    assert np.array_equal(labels, want[0]) and np.array_equal(images, want[1])


@pytest.mark.slow
def test_training_works_on_a_read_only_data_folder(tiny_data_dir, tmp_path):
    """A read-only bind mount of data/ (a shared dataset mount): the cache goes to the user's cache folder."""
    ro = tmp_path / "ro-data"
    ro.mkdir()
    shutil.rmtree(tiny_data_dir / "processed" / ".cache")  # written by the fixture's write_csv
    args = ["-m", "fashion_conv.fit", "--data.data_dir", str(ro), "--data.val_size", "20", "--model.backbone", "mlp",
            "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    for cache_home in (tmp_path / "user-cache", Path("/proc/no-cache-here")):
        env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
        out = run_with_mounts([f"mount --bind -o ro {tiny_data_dir} {ro}"], [PYTHON, *args], cwd=REPO, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "fashion_conv run summary" in out.stdout and "Traceback" not in out.stderr
    assert len(list((tmp_path / "user-cache" / "fashion_conv").glob("*-fashion-mnist-*.csv.npy"))) == 2
    assert "note: no writable place for the parse cache" in out.stderr  # the second run: nowhere to write, still trained
    assert not (tiny_data_dir / "processed" / ".cache").exists()


def test_a_stat_is_trusted_only_two_seconds_after_the_files_last_change(monkeypatch):
    from types import SimpleNamespace

    now = time.time_ns()
    stat = dict(st_size=10, st_mtime_ns=now - 5_000_000_000, st_ino=7, st_dev=3)
    fresh = csvio._identity(SimpleNamespace(**stat, st_ctime_ns=now - 1_500_000_000))  # a write in this tick could follow
    old = csvio._identity(SimpleNamespace(**stat, st_ctime_ns=now - 2_500_000_000))
    assert fresh.tolist() == [0] * 5 and csvio._identity(None).tolist() == [0] * 5
    monkeypatch.setattr(csvio.time, "time_ns", lambda: now)  # the edge: trusted at exactly two seconds
    assert csvio._identity(SimpleNamespace(**stat, st_ctime_ns=now - 2_000_000_000)).tolist()[2] == now - 2_000_000_000
    assert csvio._identity(SimpleNamespace(**stat, st_ctime_ns=now - 1_999_999_999)).tolist() == [0] * 5
    assert old.tolist() == [10, now - 5_000_000_000, now - 2_500_000_000, 7, 3] and old.dtype == np.int64


def test_the_cache_places_are_beside_the_csv_then_the_users_cache_folder(tmp_path, monkeypatch):
    path = tmp_path / "processed" / "fashion-mnist-train.csv"
    key = hashlib.blake2b(str(path.resolve()).encode(), digest_size=8).hexdigest()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert csvio._cache_paths(path) == [
        tmp_path / "processed" / ".cache" / "fashion-mnist-train.csv.npy",
        tmp_path / "xdg" / "fashion_conv" / f"{key}-fashion-mnist-train.csv.npy",
    ]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert csvio._cache_paths(path)[1] == tmp_path / "home" / ".cache" / "fashion_conv" / f"{key}-fashion-mnist-train.csv.npy"


def test_a_data_folder_that_cannot_hold_the_cache_sends_it_to_the_users_folder(tmp_path, monkeypatch):
    """The first place cannot be written (here its folder's name is taken by a file): the second one gets the
    cache, and the next read is served from it without a parse."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    path = tmp_path / "processed" / "fashion-mnist-train.csv"
    path.parent.mkdir()
    (path.parent / ".cache").write_text("a file where the cache folder would go")
    want = tiny_arrays(30)
    write_csv(path, *want)
    second = csvio._cache_paths(path)[1]
    assert second.is_file()

    forbid_parsing(monkeypatch)
    labels, images = read_csv(path)
    assert np.array_equal(labels, want[0]) and np.array_equal(images, want[1])


def test_a_restamp_that_cannot_be_written_still_serves_the_cache(csv_file, monkeypatch, capsys):
    """The re-stamp after a touch is an optimisation: a cache file that cannot be rewritten still serves its rows."""
    want = read_csv(csv_file)
    monkeypatch.setattr(csvio, "_RACY_NS", 0)
    later = csv_file.stat().st_mtime_ns + 5_000_000_000
    os.utime(csv_file, ns=(later, later))

    def read_only(*args):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(csvio, "_save_cache", read_only)
    forbid_parsing(monkeypatch)
    labels, images = read_csv(csv_file)
    assert np.array_equal(labels, want[0]) and np.array_equal(images, want[1])
    assert capsys.readouterr().err == ""
