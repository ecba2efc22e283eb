"""predict in a pipeline: a reader that stops early (``| head``) is no traceback; a dangling link is reported."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from conftest import REPO, tiny_arrays
from fashion_conv import build_backbone
from fashion_conv.data.csvio import write_csv
from fashion_conv.predict import main


def test_predict_piped_into_head_stops_quietly(tmp_path):
    torch.save(build_backbone("mlp").state_dict(), tmp_path / "model.pth")
    write_csv(tmp_path / "many.csv", *tiny_arrays(3000))  # ~300 KB of text output, more than a pipe buffers
    proc = subprocess.Popen(
        [sys.executable, "-m", "fashion_conv.predict", "--weights", "model.pth", "--backbone", "mlp", "many.csv"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    first = proc.stdout.readline()  # what `head -1` does: read a line, then close the pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and first.startswith(b"many.csv row 1: ")
    assert err == "", err


def test_a_dangling_symlink_in_a_folder_is_reported(tmp_path, capsys):
    torch.save(build_backbone("mlp").state_dict(), tmp_path / "model.pth")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(tiny_arrays(1)[1][0]).save(photos / "a.png")
    (photos / "b.png").symlink_to(tmp_path / "moved-away.png")
    assert main(["--weights", str(tmp_path / "model.pth"), "--backbone", "mlp", str(photos)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{photos / 'a.png'}: ")
    assert err == f"error: {photos / 'b.png'}: dangling symbolic link: its target {tmp_path / 'moved-away.png'} does not exist\n"
    assert np.asarray(Image.open(photos / "a.png")).shape == (28, 28)
