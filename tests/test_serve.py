"""The HTTP server, run as ``python -m fashion_conv.serve`` in a subprocess and queried over real HTTP: answers equal to
predict's, concurrent requests, every kind of bad input, the page in a real browser, SIGTERM."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import REPO, tiny_images
from fashion_conv.data.csvio import write_csv
from fashion_conv.export import export
from fashion_conv.models.weights import load_backbone
from fashion_conv.predict import load_image
from fashion_conv.predict import main as predict_main
from fashion_conv.serve import main as serve_main
from fashion_conv.serving.front import INLINE_DECODE_BYTES

EXAMPLE = REPO / "docs" / "examples" / "test-row-1.png"
PHOTO = REPO / "docs" / "examples" / "test-row-1-as-photo.png"
CHROMIUM = Path("/usr/bin/chromium")
PROBABILITY_STEP = 1e-4  # both round to 4 decimals; a batch sums in another order (~1e-7), which can move the last digit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*model_args: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    """``python -m fashion_conv.serve`` on a free port, once ``/health`` answers ok."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fashion_conv.serve", *map(str, model_args), "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip  (its own process group, as a terminal gives a command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server stopped with {proc.returncode}: {proc.communicate()}")
        try:
            if requests.get(f"{url}/health", timeout=1).text == "ok":
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not become healthy in 120 s")


def stop(proc: subprocess.Popen, ctrl_c: bool = False) -> tuple[int, str, str]:
    """SIGTERM to the server, or SIGINT to its whole process group (Ctrl-C in a terminal); its exit status and output."""
    if proc.poll() is None:
        if ctrl_c:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Images and pixel rows to send, and ``predict``'s JSON answer for each (the same model: ``cnn.pth``)."""
    folder = tmp_path_factory.mktemp("inputs")
    labels, rows = tiny_images(4, seed=3)
    write_csv(folder / "rows.csv", labels, rows)
    files = {"example": EXAMPLE, "photo": PHOTO}
    for i, row in enumerate(rows[:2]):  # dark objects on a light backdrop: predict inverts them
        files[f"dark{i}"] = folder / f"dark{i}.png"
        files[f"dark{i}"].write_bytes(png_bytes(np.kron(255 - row, np.ones((3, 2), dtype=np.uint8))))
    photo = np.full((900, 1200), 235, dtype=np.uint8)  # a photo over 100 kB: decoded on a thread, not inline
    photo[200:700, 300:900] = 40
    photo += np.random.default_rng(0).integers(0, 16, photo.shape, dtype=np.uint8)
    files["large"] = folder / "large.jpg"
    Image.fromarray(photo).save(files["large"], quality=95)
    assert files["large"].stat().st_size > INLINE_DECODE_BYTES
    return {"folder": folder, "files": files, "rows": rows}


def predict_answers(model_args: list[str], inputs: dict, capsys) -> dict:
    """``python -m fashion_conv.predict --format json``'s records, by image name and by CSV row."""
    capsys.readouterr()
    paths = [*inputs["files"].values(), inputs["folder"] / "rows.csv"]
    assert predict_main([*model_args, "--format", "json", *map(str, paths)]) == 0
    records = json.loads(capsys.readouterr().out)["predictions"]
    names = {str(p): name for name, p in inputs["files"].items()}
    return {names[r["input"]] if r["row"] is None else f"row{r['row'] - 1}": r for r in records}


def seen_pixels(answer: dict) -> list[int]:
    return list(base64.b64decode(answer["pixels"]))


def expected_pixels(name: str, inputs: dict) -> list[int]:
    if name.startswith("row"):
        return inputs["rows"][int(name[3:])].flatten().tolist()
    return load_image(inputs["files"][name])[0].mul(255).round().byte().flatten().tolist()


def assert_same_answer(served: dict, predicted: dict) -> None:
    assert served["prediction"] == predicted["prediction"]
    assert [t["class"] for t in served["top"]] == [t["class"] for t in predicted["top"]]
    for s, p in zip(served["top"], predicted["top"]):
        assert abs(s["probability"] - p["probability"]) <= PROBABILITY_STEP + 1e-9
    assert served["inverted"] == predicted.get("inverted", False)


def post(url: str, name: str, inputs: dict, how: str = "form") -> requests.Response:
    if name.startswith("row"):
        return requests.post(f"{url}/predict", json={"pixels": inputs["rows"][int(name[3:])].flatten().tolist()}, timeout=30)
    data = inputs["files"][name].read_bytes()
    if how == "form":
        return requests.post(f"{url}/predict", files={"file": (name + ".png", data, "image/png")}, timeout=30)
    return requests.post(f"{url}/predict", data=data, headers={"Content-Type": "image/png"}, timeout=30)


@pytest.fixture(scope="module")
def cnn_server(weights, tmp_path_factory):
    """A server of an untrained cnn (``--weights cnn.pth --backbone cnn``)."""
    proc, url = start_server("--weights", weights["cnn"], "--backbone", "cnn", cwd=tmp_path_factory.mktemp("serve"))
    yield url
    code, out, err = stop(proc)
    assert code == 0 and "Traceback" not in err, err


def test_answers_equal_predicts_under_100_concurrent_requests(cnn_server, weights, inputs, capsys):
    expected = predict_answers(["--weights", str(weights["cnn"]), "--backbone", "cnn"], inputs, capsys)
    jobs = [(name, how) for name in expected for how in ("form", "raw")] * 10  # 140 requests, 8 different inputs
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda job: post(cnn_server, job[0], inputs, job[1]), jobs))
    assert [a.status_code for a in answers] == [200] * len(jobs)
    for (name, _), answer in zip(jobs, answers):
        assert_same_answer(answer.json(), expected[name])
    for (name, _), answer in zip(jobs, answers):  # the image as the model saw it: predict's preprocessing
        assert seen_pixels(answer.json()) == expected_pixels(name, inputs)
    assert expected["dark0"]["inverted"] and not expected["example"]["inverted"]  # both kinds were served


def bad_inputs() -> dict:
    png = EXAMPLE.read_bytes()
    photo = PHOTO.read_bytes()
    return {
        "not an image": (dict(data=b"hello, server", headers={"Content-Type": "image/png"}), 400, "not an image file"),
        "truncated file": (dict(data=photo[: len(photo) // 2]), 400, "truncated"),
        "empty body": (dict(data=b""), 400, "the body is empty"),
        "blank image": (dict(data=png_bytes(np.zeros((40, 30), dtype=np.uint8))), 400, "no object stands out"),
        "too many pixels": (dict(data=png_header_only(6000, 6000)), 400, "6000x6000 pixels, more than the 25,000,000"),
        "decompression bomb": (dict(data=png_header_only(30000, 30000)), 400, "decompression bomb"),
        "form without file": (dict(files={"image": ("x.png", png, "image/png")}), 400, "no file field named 'file'"),
        "broken multipart": (
            dict(data=b"--xyz\r\nnonsense", headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400, "multipart"
        ),
        "invalid JSON": (dict(data=b'{"pixels": [1, 2', headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
        "JSON without pixels": (dict(json={"image": [0] * 784}), 400, 'expected JSON {"pixels"'),
        "JSON too few pixels": (dict(json={"pixels": [0] * 783}), 400, '"pixels" has 783 values, expected 784'),
        "JSON pixel out of range": (dict(json={"pixels": [0] * 100 + [256] + [0] * 683}), 400, '"pixels"[100] is 256'),
        "JSON pixel not an integer": (dict(json={"pixels": [0.5] * 784}), 400, '"pixels"[0] is 0.5'),
        "oversized body": (dict(data=b"\0" * (10 * 1024 * 1024 + 1)), 413, "larger than the 10,485,760 bytes"),
    }


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_bad_input_is_a_4xx_and_the_server_goes_on(cnn_server, inputs, case):
    kwargs, status, detail = bad_inputs()[case]
    answer = requests.post(f"{cnn_server}/predict", timeout=30, **kwargs)
    assert answer.status_code == status
    assert detail in answer.json()["detail"]
    assert post(cnn_server, "example", inputs).status_code == 200


def test_health_and_page(cnn_server):
    assert requests.get(f"{cnn_server}/health", timeout=5).text == "ok"
    page = requests.get(f"{cnn_server}/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and 'fetch("predict"' in page.text


def test_a_bad_model_is_one_error_line(tmp_path, capsys):
    assert serve_main(["--checkpoint", str(tmp_path / "missing.ckpt")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.ckpt'}: no such file\n"
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    assert serve_main(["--onnx", str(tmp_path / "bad.onnx")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'bad.onnx'}: not an ONNX model onnxruntime can run (")
    assert serve_main(["--onnx", str(tmp_path / "bad.onnx"), "--port", "80"]) == 2
    assert capsys.readouterr().err == "error: --port 80: choose a port from 1024 to 65535\n"


def test_onnx_server_answers_like_predict_and_stops_cleanly_on_sigterm(weights, inputs, tmp_path, capsys):
    """An exported .onnx served by onnxruntime; SIGTERM while a request is half sent: it is answered, exit status 0."""
    import torch

    net = load_backbone(weights["cnn"], "cnn")
    export(net, tmp_path / "cnn.onnx", "onnx", torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    expected = predict_answers(["--weights", str(weights["cnn"]), "--backbone", "cnn"], inputs, capsys)
    proc, url = start_server("--onnx", tmp_path / "cnn.onnx", cwd=tmp_path)
    try:
        for name in ("example", "photo", "row0"):
            assert_same_answer(post(url, name, inputs).json(), expected[name])
        body = EXAMPLE.read_bytes()
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as client:
            client.sendall(head.encode() + body[:100])  # in flight: headers and part of the body
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert proc.poll() is None  # still waiting for the rest of the request
            client.sendall(body[100:])
            reply = b""
            while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < 50:
                reply += client.recv(65536) or b"!"
                if reply.endswith(b"!"):
                    break
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"prediction":"' + expected["example"]["prediction"].encode() in reply
        out, err = proc.communicate(timeout=60)
        code = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and "Traceback" not in err, err
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)


@pytest.mark.slow
def test_the_page_reads_ankle_boot_in_a_real_browser(trained_mlp, tmp_path):
    """Chromium (Debian's package, driven by Playwright) uploads test-row-1.png on the page and shows the answer."""
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is not installed (scripts/setup.sh test installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    proc, url = start_server("--checkpoint", trained_mlp / "checkpoints" / "best.ckpt", cwd=tmp_path)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url + "/")
            page.set_input_files("#file", str(EXAMPLE))
            page.wait_for_selector("#top tr", timeout=30_000)
            names = page.locator("#top .name").all_inner_texts()
            shares = page.locator("#top .pct").all_inner_texts()
            shown = page.eval_on_selector(
                "#seen", "c => Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 == 0))"
            )  # the red channel of the canvas, where the page drew the gray pixels
            browser.close()
    finally:
        code, out, err = stop(proc, ctrl_c=True)
    assert names[0] == "Ankle boot" and len(names) == 3
    assert all(s.endswith("%") for s in shares) and float(shares[0][:-1]) > 50
    assert shown == np.asarray(Image.open(EXAMPLE)).flatten().tolist()  # a 28x28 image is used as is
    assert code == 0 and "Traceback" not in err, err  # Ctrl-C stops every process quietly
