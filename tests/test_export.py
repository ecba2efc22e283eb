"""Export: torch.export programs and ONNX give the backbone's logits, are checked before they are kept; the command."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import REAL_DATA, tiny_images
from fashion_conv import list_backbones, load_backbone
from fashion_conv import export as export_module
from fashion_conv.data.csvio import write_csv
from fashion_conv.export import LOGIT_TOLERANCE, export, load_program, write_program
from fashion_conv.export import main as export_main
from fashion_conv.utils.errors import FashionConvError

SUFFIX = {"program": "pt2", "onnx": "onnx"}


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("to", ["program", "onnx"])
@pytest.mark.parametrize("name", list_backbones())
def test_export_round_trip(name, to, weights, tmp_path):
    net = load_backbone(weights[name], name)
    report = export(net, tmp_path / f"model.{SUFFIX[to]}", to, images(20))
    assert report["images"] == 20 and report["same_class"] == 20 and report["max_abs_diff"] <= LOGIT_TOLERANCE
    assert [p.name for p in tmp_path.iterdir()] == [f"model.{SUFFIX[to]}"]  # no temporary file left
    # Loaded as a user would, with torch alone or onnxruntime alone; any batch size.
    if to == "program":
        exported = torch.export.load(tmp_path / "model.pt2").module()
        run = lambda x: exported(x).detach()  # noqa: E731
    else:
        session = onnxruntime.InferenceSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["images"] and session.get_inputs()[0].shape[0] == "batch"
        run = lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])  # noqa: E731
    for batch in (1, 7):
        x = images(batch, seed=batch + 10)
        with torch.no_grad():
            assert run(x).shape == (batch, 10)
            assert (run(x) - net(x)).abs().max() <= LOGIT_TOLERANCE


def test_a_failed_check_writes_nothing(weights, tmp_path, monkeypatch):
    net = load_backbone(weights["cnn"], "cnn")
    target = tmp_path / "model.pt2"
    target.write_bytes(b"an earlier export")

    def off_by(delta):
        return lambda path: (lambda x, program=load_program(path): program(x) + delta)

    monkeypatch.setitem(export_module.FORMATS, "program", (write_program, off_by(0.5 * LOGIT_TOLERANCE)))
    assert export(net, tmp_path / "near.pt2", "program", images(5))["max_abs_diff"] <= LOGIT_TOLERANCE
    monkeypatch.setitem(export_module.FORMATS, "program", (write_program, off_by(2 * LOGIT_TOLERANCE)))
    with pytest.raises(FashionConvError, match=r"model\.pt2: not written: .*max \|logit difference\| 2\.0e-04"):
        export(net, target, "program", images(5))
    assert target.read_bytes() == b"an earlier export"  # kept as it was, and no temporary file beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2", "near.pt2"]


def test_a_changed_class_fails_the_check(weights, tmp_path, monkeypatch):
    net = load_backbone(weights["mlp"], "mlp")

    def swapped(path):
        program = load_program(path)
        return lambda x: program(x).flip(1)  # same logits, other classes

    monkeypatch.setitem(export_module.FORMATS, "program", (write_program, swapped))
    with pytest.raises(FashionConvError, match="same class for 0 of 6"):
        export(net, tmp_path / "model.pt2", "program", images(6))
    assert list(tmp_path.iterdir()) == []


def test_export_command(run_dir, tmp_path, capsys, monkeypatch):
    csv = tmp_path / "check.csv"
    labels, pixels = tiny_images(30)
    write_csv(csv, labels, pixels)
    monkeypatch.chdir(tmp_path)
    assert export_main(["--checkpoint", str(run_dir / "last.ckpt"), "--check-on", str(csv)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"checked on {re.escape(str(csv))}: 30 images, .* same class for 30 of 30, accuracy 0\.\d{{4}}\n", out)
    assert "wrote model.pt2" in out  # the default name
    net = load_backbone(run_dir / "model.pth", "mlp")
    x = torch.from_numpy(pixels).unsqueeze(1).float() / 255
    with torch.no_grad():
        assert torch.allclose(torch.export.load(tmp_path / "model.pt2").module()(x), net(x), atol=LOGIT_TOLERANCE)

    args = ["--weights", str(run_dir / "model.pth"), "--backbone", "mlp", "--check-on", str(csv), "--to", "onnx"]
    assert export_main(args) == 0
    assert capsys.readouterr().err == ""  # nothing to learn to ignore: no warning, no exporter progress lines
    assert (tmp_path / "model.onnx").is_file()

    assert export_main(["--checkpoint", str(tmp_path / "nope.ckpt"), "-o", "x.pt2", "--check-on", str(csv)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.ckpt'}: no such file\n"
    assert export_main(["--checkpoint", str(run_dir / "last.ckpt"), "-o", "y.pt2", "--check-on", "missing.csv"]) == 1
    assert capsys.readouterr().err.startswith("error: missing.csv: cannot read it")
    assert not (tmp_path / "x.pt2").exists() and not (tmp_path / "y.pt2").exists()


@pytest.mark.slow
def test_onnx_answers_like_pytorch_on_the_test_set(trained_mlp, tmp_path, capsys):
    """The official 10,000 test images: ONNX logits within 1e-4 of PyTorch's, every class the same."""
    out = tmp_path / "model.onnx"
    assert export_main(["--checkpoint", str(trained_mlp / "checkpoints/best.ckpt"), "--to", "onnx", "-o", str(out),
                        "--check-on", str(REAL_DATA / "fashion-mnist-test.csv")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "10,000 images" in printed and "same class for 10,000 of 10,000" in printed
    from fashion_conv.data.csvio import read_csv

    labels, pixels = read_csv(REAL_DATA / "fashion-mnist-test.csv")
    x = torch.from_numpy(pixels).unsqueeze(1).float() / 255
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        want = load_backbone(trained_mlp / "model.pth", "mlp")(x).numpy()
    assert np.abs(got - want).max() <= LOGIT_TOLERANCE
    assert (got.argmax(1) == want.argmax(1)).all()
    assert (want.argmax(1) == labels).mean() > 0.75  # a trained model, so the classes compared mean something
