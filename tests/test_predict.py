"""Using a trained model: predict CLI (images, folders, CSVs), Trainer.predict, torch-only reload (export: test_export.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_images
from fashion_conv import CLASS_NAMES, FashionClassifier, FashionMNISTDataModule, build_backbone, load_backbone
from fashion_conv.data.csvio import HEADER, read_images_csv, write_csv
from fashion_conv.utils.errors import DataError
from fashion_conv.predict import fit_to_square, load_image, preprocess, should_invert
from fashion_conv.predict import main as predict_main

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = predict_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def object_photo(size=(300, 200), box=(60, 40, 200, 120), background=245, ink=30) -> np.ndarray:
    """A product-photo-like (H, W) uint8 array: a dark block on a light backdrop."""
    gray = np.full(size[::-1], background, dtype=np.uint8)
    left, top, right, bottom = box
    gray[top:bottom, left:right] = ink
    return gray


def save_image(path: Path, gray: np.ndarray, mode: str) -> Path:
    """Save a gray array as ``mode`` (alpha: the backdrop transparent, as in a cut-out product photo)."""
    img = Image.fromarray(gray)
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray(np.where(gray > 127, 0, 255).astype(np.uint8))
        img = img.convert(mode[:-1])
        img.putalpha(alpha)
    elif mode == "I;16":
        img = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    img.save(path)
    return path


# ---- the model: checkpoint, model.pth, and reloading with torch alone ----


def test_model_pth_and_checkpoint_predict_the_same(run_dir, tmp_path, capsys):
    labels, images = tiny_images(12, seed=3)
    write_csv(tmp_path / "rows.csv", labels, images)
    code_a, from_ckpt, _ = run(capsys, "--checkpoint", run_dir / "last.ckpt", tmp_path / "rows.csv", "--format", "json")
    code_b, from_pth, _ = run(capsys, "--weights", run_dir / "model.pth", "--backbone", "mlp", tmp_path / "rows.csv", "--format", "json")
    assert code_a == code_b == 0
    assert json.loads(from_ckpt) == json.loads(from_pth)
    # and the same as Lightning's own reload and the torch-only one
    x = torch.from_numpy(images).unsqueeze(1).float() / 255
    lightning_model = FashionClassifier.load_from_checkpoint(run_dir / "last.ckpt", map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        expected = lightning_model.predict_step(x, 0)
        assert torch.equal(load_backbone(run_dir / "model.pth", "mlp")(x).softmax(1), expected)
    top = [r["prediction"] for r in json.loads(from_pth)["predictions"]]
    assert top == [CLASS_NAMES[i] for i in expected.argmax(1)]


def test_tta_checkpoint_predicts_as_it_was_tested(run_dir, tmp_path, capsys):
    """A checkpoint trained with --model.tta_hflip predicts with flip TTA by default, like its test metric."""
    ckpt = torch.load(run_dir / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["tta_hflip"] = True
    for key in ckpt["state_dict"]:  # sharpen the barely trained net, so that flipping changes its outputs clearly
        ckpt["state_dict"][key] = ckpt["state_dict"][key] * 4
    torch.save(ckpt, tmp_path / "tta.ckpt")
    labels, images = tiny_images(12, seed=4)
    write_csv(tmp_path / "rows.csv", labels, images)
    x = torch.from_numpy(images).unsqueeze(1).float() / 255
    model = FashionClassifier.load_from_checkpoint(tmp_path / "tta.ckpt", map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        expected, plain = model.predict_step(x, 0), model(x).softmax(1)
    assert (expected - plain).abs().max() > 1e-3  # far more than the 4-decimal rounding of the output

    def probabilities(*extra):
        code, out, _ = run(capsys, "--checkpoint", tmp_path / "tta.ckpt", tmp_path / "rows.csv", "--format", "json", "--top-k", "10", *extra)
        assert code == 0
        rows = [{t["class"]: t["probability"] for t in r["top"]} for r in json.loads(out)["predictions"]]
        return torch.tensor([[row[c] for c in CLASS_NAMES] for row in rows])

    torch.testing.assert_close(probabilities(), expected, atol=1e-4, rtol=0)  # rounded to 4 places
    torch.testing.assert_close(probabilities("--tta-hflip", "no"), plain, atol=1e-4, rtol=0)


def test_backbones_imports_without_lightning(weights):
    code = (
        "import sys, torch\n"
        "sys.modules['lightning'] = sys.modules['pytorch_lightning'] = None  # any import of them now fails\n"
        "from fashion_conv.models.backbones import load_backbone\n"
        f"net = load_backbone({str(weights['cnn'])!r}, 'cnn')\n"
        "print(tuple(net(torch.zeros(2, 1, 28, 28)).shape))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 10)"


def test_lazy_package_exports_still_import():
    import fashion_conv

    assert set(fashion_conv.__all__) <= set(dir(fashion_conv))
    for name in fashion_conv.__all__:
        assert getattr(fashion_conv, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fashion_conv.nope  # noqa: B018


def test_pickle_payload_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model.1.weight": Payload()}, tmp_path / "model.pth")
    code, out, err = run(capsys, "--weights", tmp_path / "model.pth", "--backbone", "mlp", tmp_path)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "refused" in err and "system" in err
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": "mlp"}, "x": Payload()}, tmp_path / "evil.ckpt")
    code, _, err = run(capsys, "--checkpoint", tmp_path / "evil.ckpt", tmp_path)
    assert code == 1 and "refused" in err
    assert not marker.exists()


def fake_checkpoint(path: Path, backbone: str, kwargs: dict | None = None, state: dict | None = None) -> Path:
    """A checkpoint-shaped dict (what Lightning writes, minus the training state)."""
    state = state if state is not None else {f"backbone.{k}": v for k, v in build_backbone("mlp").state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": backbone, "backbone_kwargs": kwargs}}, path)
    return path


def test_checkpoint_class_path_needs_consent_and_imports_nothing_unasked(tmp_path, capsys):
    labels, images = tiny_images(3)
    write_csv(tmp_path / "rows.csv", labels, images)
    marker = tmp_path / "imported"
    evil = fake_checkpoint(tmp_path / "evil.ckpt", "os.system", {"command": f"touch {marker}"})
    code, _, err = run(capsys, "--checkpoint", evil, tmp_path / "rows.csv")
    assert code == 1 and "confirm with --backbone os.system" in err and not marker.exists()
    # a class path the user confirms is built (here the MLP by its class path)
    ckpt = fake_checkpoint(tmp_path / "path.ckpt", "fashion_conv.models.backbones.MLP")
    assert run(capsys, "--checkpoint", ckpt, tmp_path / "rows.csv")[0] == 1
    code, out, _ = run(capsys, "--checkpoint", ckpt, "--backbone", "fashion_conv.models.backbones.MLP", tmp_path / "rows.csv")
    assert code == 0 and "accuracy" in out


# ---- images ----


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
@pytest.mark.parametrize("size", [(300, 200), (45, 17), (13, 90)])
def test_png_of_any_size_and_mode_becomes_1x28x28(tmp_path, mode, size):
    w, h = size
    gray = object_photo(size, box=(w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    x, inverted = load_image(save_image(tmp_path / "img.png", gray, mode))
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert inverted and x[0, 0, 0] == 0 and x.max() == 1  # light object on black, like the dataset


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_is_accepted(tmp_path, mode):
    path = tmp_path / "photo.jpg"
    Image.fromarray(object_photo()).convert(mode).save(path, quality=85)
    x, inverted = load_image(path)
    assert x.shape == (1, 28, 28) and inverted and x[0, 0, 0] < 0.05


def test_object_is_fitted_keeping_its_aspect_ratio_and_centred():
    gray = np.zeros((100, 200), dtype=np.uint8)
    gray[70:80, 10:50] = 255  # 40 wide, 10 tall, near a corner
    out = fit_to_square(gray)
    assert out.shape == (28, 28)
    rows, cols = np.nonzero(out)
    assert (cols.min(), cols.max()) == (0, 27)  # longest side fills the box: 40 -> 28
    assert (rows.min(), rows.max()) == (10, 16)  # 10 -> 7 rows, centred: (28 - 7) // 2 = 10
    assert (out[10:17] == 255).all()


def test_dark_background_becomes_black_and_light_object_white():
    gray = np.full((60, 60), 40, dtype=np.uint8)  # dark grey backdrop
    gray[10:50, 20:40] = 200
    out = fit_to_square(gray)
    assert out[0, 0] == 0 and out.max() == 255


def test_auto_inversion_follows_the_border():
    photo = object_photo()  # dark object on white
    assert should_invert(photo) and not should_invert(255 - photo)
    assert should_invert(255 - photo, "yes") and not should_invert(photo, "no")
    # a product photo and its negative (the dataset's look) give the same input
    as_photo, inverted = preprocess(Image.fromarray(photo))
    as_negative, not_inverted = preprocess(Image.fromarray(255 - photo))
    assert inverted and not not_inverted and torch.equal(as_photo, as_negative)


def test_28x28_image_is_used_as_is(tmp_path):
    _, images = tiny_images(1)
    path = save_image(tmp_path / "row.png", images[0], "L")
    x, inverted = load_image(path)
    assert not inverted and torch.equal(x, torch.from_numpy(images[0]).float().div(255).unsqueeze(0))


def test_folder_predicts_every_image(weights, tmp_path, capsys):
    for i, mode in enumerate(["L", "RGB", "RGBA"]):
        save_image(tmp_path / f"img{i}.png", object_photo(), mode)
    (tmp_path / "notes.txt").write_text("not an image, and not looked at")
    code, out, err = run(capsys, "--weights", weights["cnn"], "--backbone", "cnn", tmp_path, "--top-k", "2")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3 and all("top 2:" in line for line in lines)
    assert lines[0].startswith(f"{tmp_path / 'img0.png'}: ")
    assert lines[0].split(": ")[1].split(" (")[0] in CLASS_NAMES


def test_folder_with_a_bad_image_predicts_the_rest(weights, tmp_path, capsys):
    save_image(tmp_path / "good.png", object_photo(), "RGB")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    code, out, err = run(capsys, "--weights", weights["mlp"], "--backbone", "mlp", tmp_path)
    assert code == 1  # something was not predicted: scripts notice
    assert out.startswith(str(tmp_path / "good.png")) and len(out.splitlines()) == 1
    assert err.splitlines() == [err.strip()] and err.startswith(f"error: {tmp_path / 'broken.png'}: not a readable image")


# ---- CSV inputs and output formats ----


def expected_predictions(weights_path: Path, images: np.ndarray) -> list[int]:
    net = load_backbone(weights_path, "cnn5")
    with torch.no_grad():
        return net(torch.from_numpy(images).unsqueeze(1).float() / 255).argmax(1).tolist()


def test_csv_with_labels_reports_accuracy(weights, tmp_path, capsys):
    _, images = tiny_images(10, seed=5)
    predicted = expected_predictions(weights["cnn5"], images)
    labels = np.array([p if i < 7 else (p + 1) % 10 for i, p in enumerate(predicted)], dtype=np.uint8)  # 7 of 10 right
    write_csv(tmp_path / "rows.csv", labels, images)
    code, out, err = run(capsys, "--weights", weights["cnn5"], "--backbone", "cnn5", tmp_path / "rows.csv")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 11
    assert lines[0].startswith(f"{tmp_path / 'rows.csv'} row 1: {CLASS_NAMES[predicted[0]]} (")
    assert lines[0].endswith(f"label {CLASS_NAMES[labels[0]]}")
    assert lines[-1] == f"{tmp_path / 'rows.csv'}: accuracy 0.7000 (7 of 10 rows)"


def write_unlabelled_csv(path: Path, images: np.ndarray) -> Path:
    rows = [",".join(HEADER[1:])] + [",".join(map(str, img.ravel())) for img in images]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_without_labels(weights, tmp_path, capsys):
    _, images = tiny_images(4, seed=6)
    path = write_unlabelled_csv(tmp_path / "pixels.csv", images)
    code, out, _ = run(capsys, "--weights", weights["cnn5"], "--backbone", "cnn5", path, "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert result["accuracy"] == []
    assert [r["prediction"] for r in result["predictions"]] == [CLASS_NAMES[i] for i in expected_predictions(weights["cnn5"], images)]
    assert all(r["label"] is None for r in result["predictions"])


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("300", "line 3, column 5: pixel5 is 300, expected an integer in 0-255"),
        ("x", "line 3, column 5: pixel5 is 'x', expected an integer in 0-255"),
        ("", "line 3, column 5: pixel5 is empty, expected an integer in 0-255"),
    ],
)
def test_unlabelled_csv_is_checked_like_the_dataset(tmp_path, cell, message):
    _, images = tiny_images(2)
    path = write_unlabelled_csv(tmp_path / "pixels.csv", images)
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[4] = cell
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as raised:
        read_images_csv(path)
    assert str(raised.value) == f"{path}, {message}"


def test_json_and_csv_outputs_parse(weights, tmp_path, capsys):
    labels, images = tiny_images(5)
    write_csv(tmp_path / "rows.csv", labels, images)
    photo = save_image(tmp_path / "photo.png", object_photo(), "RGB")
    common = ["--weights", weights["cnn"], "--backbone", "cnn", photo, tmp_path / "rows.csv", "--top-k", "4"]
    code, out, _ = run(capsys, *common, "--format", "json")
    result = json.loads(out)
    assert code == 0 and len(result["predictions"]) == 6
    first = result["predictions"][0]
    assert first["input"] == str(photo) and first["row"] is None and first["inverted"] is True
    assert len(first["top"]) == 4 and first["top"][0]["class"] == first["prediction"]
    assert result["accuracy"][0]["total"] == 5
    code, out, err = run(capsys, *common, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 6
    assert rows[1]["row"] == "1" and rows[1]["label"] == CLASS_NAMES[labels[0]] and rows[1]["class4"] in CLASS_NAMES
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in result["predictions"]]
    assert "accuracy" in err  # the summary goes to stderr, so stdout stays one table


# ---- errors: one line, non-zero exit, no traceback ----


def bad_files(tmp: Path, weights: dict[str, Path], run_dir: Path) -> SimpleNamespace:
    """Broken inputs and model files in ``tmp``, and the usual model arguments."""
    labels, images = tiny_images(3)
    write_csv(tmp / "rows.csv", labels, images)
    photo = save_image(tmp / "photo.png", object_photo(), "RGB")
    png = photo.read_bytes()
    (tmp / "truncated.png").write_bytes(png[: len(png) // 2])
    (tmp / "text.jpg").write_text("hello")
    (tmp / "empty").mkdir()
    Image.new("RGB", (50, 40), "white").save(tmp / "blank.png")
    (tmp / "bad.csv").write_text("label,pixel1\n1,2\n")
    (tmp / "corrupt.pth").write_bytes(weights["mlp"].read_bytes()[:3000])
    (tmp / "notes.pth").write_text("not weights")
    torch.save([1, 2, 3], tmp / "list.pth")
    mlp = ["--weights", weights["mlp"], "--backbone", "mlp"]
    return SimpleNamespace(tmp=tmp, photo=photo, mlp=mlp, weights=weights, ckpt=run_dir / "last.ckpt")


BAD_INPUTS = {  # case: (command line from bad_files(), what the error line must say)
    "missing image": (lambda f: f.mlp + [f.tmp / "nope.png"], "nope.png: no such file or folder"),
    "not an image": (lambda f: f.mlp + [f.tmp / "text.jpg"], "text.jpg: not a readable image"),
    "truncated image": (lambda f: f.mlp + [f.tmp / "truncated.png"], "truncated.png: not a readable image"),
    "empty folder": (lambda f: f.mlp + [f.tmp / "empty"], "empty: folder holds no images"),
    "blank image": (lambda f: f.mlp + [f.tmp / "blank.png"], "blank.png: no object stands out from the background"),
    "bad csv": (lambda f: f.mlp + [f.tmp / "bad.csv"], "bad.csv, line 1: header has 2 columns, expected 785"),
    "missing weights": (lambda f: ["--weights", f.tmp / "nope.pth", "--backbone", "mlp", f.photo], "nope.pth: no such file"),
    "weights folder": (lambda f: ["--weights", f.tmp, "--backbone", "mlp", f.photo], "is a folder"),
    "corrupt weights": (lambda f: ["--weights", f.tmp / "corrupt.pth", "--backbone", "mlp", f.photo], "not a PyTorch weights file"),
    "text weights": (lambda f: ["--weights", f.tmp / "notes.pth", "--backbone", "mlp", f.photo], "not a PyTorch weights file"),
    "not a dict": (lambda f: ["--weights", f.tmp / "list.pth", "--backbone", "mlp", f.photo], "holds a list"),
    "weights of another backbone": (
        lambda f: ["--weights", f.weights["cnn"], "--backbone", "mlp", f.photo],
        "do not fit backbone 'mlp'",
    ),
    "unknown backbone": (lambda f: ["--weights", f.weights["cnn"], "--backbone", "resnet", f.photo], "unknown backbone 'resnet'"),
    "no backbone": (lambda f: ["--weights", f.weights["cnn"], f.photo], "needs --backbone"),
    "checkpoint of another backbone": (
        lambda f: ["--checkpoint", f.ckpt, "--backbone", "cnn", f.photo],
        "holds a 'mlp' backbone, but --backbone says 'cnn'",
    ),
    "checkpoint given as weights": (lambda f: ["--weights", f.ckpt, "--backbone", "mlp", f.photo], "pass it as --checkpoint"),
    "weights given as checkpoint": (lambda f: ["--checkpoint", f.weights["mlp"], f.photo], "not a FashionClassifier checkpoint"),
}
MODEL_FINE = {"missing image", "not an image", "truncated image", "empty folder", "blank image", "bad csv"}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_clear_line_and_fails(case, weights, run_dir, tmp_path, capsys):
    argv, message = BAD_INPUTS[case]
    code, out, err = run(capsys, *argv(bad_files(tmp_path, weights, run_dir)))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert message in err
    if case not in MODEL_FINE:
        assert out == ""  # no model, nothing predicted


def test_bad_command_line_exits_2(weights, tmp_path, capsys):
    for argv in (["x.png"], ["--weights", weights["mlp"], "--backbone", "mlp", "--top-k", "11", "x.png"]):
        with pytest.raises(SystemExit) as exited:
            predict_main([str(a) for a in argv])
        assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


# ---- Lightning's way: Trainer.predict ----


def test_trainer_predict_with_the_datamodule(run_dir, tiny_data_dir):
    model = FashionClassifier.load_from_checkpoint(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    dm = FashionMNISTDataModule(data_dir=tiny_data_dir, eval_batch_size=16, download=False)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    batches = trainer.predict(model, datamodule=dm)
    probs = torch.cat(batches)
    assert [len(b) for b in batches] == [16, 16, 8] and probs.shape == (40, 10)
    assert torch.allclose(probs.sum(1), torch.ones(40))
    with torch.no_grad():  # in file order: the same as the test set through the backbone
        assert torch.allclose(probs, model.eval()(dm.test_set.images.float() / 255).softmax(1), atol=1e-6)
        bare = model.predict_step(dm.test_set.images[:4].float() / 255, 0)
    assert torch.allclose(bare, probs[:4], atol=1e-6)
