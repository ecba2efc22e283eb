"""IDX sources in order, every check on every file, and the download path against a real local HTTP server."""

import functools
import gzip
import http.server
import shutil
import threading

import numpy as np
import pytest

from conftest import idx_bytes
from fashion_conv.data import idx
from fashion_conv.utils.errors import DataError, FashionConvError
from fashion_conv.data.idx import IdxSpec, load_raw, read_idx
from fashion_conv.prepare import main as prepare_main
from fashion_conv.data.files import prepare_data


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (base_url, folder, request_log)."""
    www = tmp_path / "www"
    www.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", www, log
    server.shutdown()
    server.server_close()


def test_read_idx_checks(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    raw = idx_bytes(images)
    spec = IdxSpec(3, 2, None)
    (tmp_path / "ok").write_bytes(raw)
    assert np.array_equal(read_idx(tmp_path / "ok", spec), images)
    (tmp_path / "ok.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(tmp_path / "ok.gz", spec), images)

    cases = {
        "truncated.gz": (gzip.compress(raw)[:-40], spec, "truncated or corrupt gzip"),
        "magic": (b"\x00\x00\x08\x01" + raw[4:], spec, "magic number is 0x00000801, expected 0x00000803"),
        "count": (raw, IdxSpec(3, 5, None), "header says 2 items, expected 5"),
        "short": (raw[:-10], spec, r"expected 1584 \(truncated or padded\)"),
        "md5": (raw, IdxSpec(3, 2, "0" * 32), "content MD5 is .* expected 0{32}"),
        "tiny": (raw[:6], spec, "too short for an IDX header"),
    }
    for name, (data, s, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=message):
            read_idx(tmp_path / name, s)


def test_official_specs_accept_the_system_copy():
    if not all(idx.candidates(idx.SYSTEM_DIR, n)[0].is_file() for n in idx.OFFICIAL):
        pytest.skip("dataset-fashion-mnist is not installed")
    arrays = load_raw("/nonexistent", mirror="")
    assert arrays["train-images-idx3-ubyte"].shape == (60000, 28, 28)
    assert np.bincount(arrays["t10k-labels-idx1-ubyte"]).tolist() == [1000] * 10


def test_raw_dir_first_then_torchvision_layout_and_plain_files(tiny_idx, tmp_path):
    src, specs = tiny_idx
    raw = tmp_path / "raw"
    (raw / "FashionMNIST" / "raw").mkdir(parents=True)
    for i, name in enumerate(specs):
        if i % 2:  # half in torchvision's layout, un-gzipped
            (raw / "FashionMNIST" / "raw" / name).write_bytes(gzip.decompress((src / f"{name}.gz").read_bytes()))
        else:
            shutil.copy(src / f"{name}.gz", raw)
    arrays = load_raw(raw, specs, system_dir=None, mirror="")
    assert arrays["train-images-idx3-ubyte"].shape == (120, 28, 28)


def test_falls_back_to_the_system_dir_past_a_corrupt_local_file(tiny_idx, tmp_path):
    src, specs = tiny_idx
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    arrays = load_raw(raw, specs, system_dir=src, mirror="")
    assert len(arrays) == 4


def test_download_from_mirror(tiny_idx, tmp_path, http_server):
    src, specs = tiny_idx
    url, www, log = http_server
    for f in src.iterdir():
        shutil.copy(f, www)
    paths = prepare_data(tmp_path / "data", specs=specs, system_dir=None, mirror=url)
    assert sorted(log) == sorted(f"/{n}.gz" for n in specs)
    assert sorted(p.name for p in (tmp_path / "data" / "raw").iterdir()) == sorted(f"{n}.gz" for n in specs)
    assert paths["train"].read_text().count("\n") == 121 and paths["test"].read_text().count("\n") == 41


def test_corrupt_download_is_rejected_and_not_kept(tiny_idx, tmp_path, http_server):
    src, specs = tiny_idx
    url, www, _ = http_server
    for f in src.iterdir():
        shutil.copy(f, www)
    good = (www / "t10k-images-idx3-ubyte.gz").read_bytes()
    (www / "t10k-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])  # a transfer cut short
    (www / "train-labels-idx1-ubyte.gz").unlink()  # 404
    with pytest.raises(FashionConvError) as info:
        prepare_data(tmp_path / "data", specs=specs, system_dir=None, mirror=url)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "truncated or corrupt gzip" in message
    assert "train-labels-idx1-ubyte.gz: download failed (HTTP Error 404" in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert not (tmp_path / "data" / "raw" / "t10k-images-idx3-ubyte.gz").exists()
    assert not list((tmp_path / "data").rglob("*.csv"))  # nothing converted from a bad file


def test_unreachable_mirror_says_what_was_tried(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASHION_CONV_MIRROR", "http://127.0.0.1:9/")  # discard port: connection refused
    code = prepare_main(["--data-dir", str(tmp_path), "--system-dir", ""])
    err = capsys.readouterr().err
    assert code == 1 and "\nerror: Fashion-MNIST files missing or unusable" in err
    assert "download failed" in err and "apt-get install -y dataset-fashion-mnist" in err
    assert "Traceback" not in err


def test_prepare_refuses_a_truncated_local_file_with_nothing_else_to_try(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(5000))[:-20])
    code = prepare_main(["--data-dir", str(tmp_path), "--system-dir", "", "--no-download"])
    err = capsys.readouterr().err
    assert code == 1 and "train-images-idx3-ubyte.gz: truncated or corrupt gzip" in err and "Traceback" not in err
    assert not (tmp_path / "processed").exists()


def test_gzip_bomb_from_the_mirror_is_refused_without_growing_the_process(tiny_idx, tmp_path, http_server):
    """A 256 KB archive that inflates to 256 MB is refused after reading one byte past the expected size."""
    import subprocess
    import sys
    import zlib

    from conftest import REPO

    _, specs = tiny_idx
    url, www, log = http_server
    name = "train-images-idx3-ubyte"
    header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (120, 28, 28))
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    zeros = bytes(1 << 20)
    bomb = packer.compress(header) + b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()
    assert len(bomb) < 300_000
    (www / f"{name}.gz").write_bytes(bomb)
    code = (
        "import resource, sys\n"
        "from fashion_conv.data.idx import IdxSpec, load_raw\n"
        f"spec = IdxSpec(3, 120, {specs[name].md5!r})\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    load_raw(sys.argv[1], {{{name!r}: spec}}, system_dir=None, mirror=sys.argv[2])\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
        "print('grew_mb', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "raw"), url], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert f"more than the expected {16 + 120 * 784} bytes after decompression; refused unread" in out.stdout, out.stdout + out.stderr
    assert int(out.stdout.split("grew_mb")[1]) < 20, out.stdout  # the old code inflated all 256 MB at once
    assert log == [f"/{name}.gz"] and not (tmp_path / "raw" / f"{name}.gz").exists()
