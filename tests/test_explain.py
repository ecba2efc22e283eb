"""``fashion_conv.research.explain``: figures' panels, IG completeness, exact equivariance, the report CLI and the fit callback."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_arrays
from torch import nn

from fashion_conv.models.backbones import ConvNet, build_backbone
from fashion_conv.research.explain import (
    attribution_maps,
    completeness_gap,
    confident_errors,
    equivariance_errors,
    feature_maps,
    figures,
    first_layer_filters,
    integrated_gradients,
    shift,
    spatial_layers,
)  # fmt: skip
from fashion_conv.research.explain.__main__ import main

IG_TOLERANCE = 0.01  # |Captum's delta| <= 1 % of f(x)_t - f(0)_t, with 64 Gauss-Legendre steps


def tiny_trained(model: nn.Module, steps: int = 20) -> nn.Module:
    """``model`` after ``steps`` Adam steps on 120 tiny images (tests/conftest.py), in eval mode."""
    labels, images = tiny_arrays(120, seed=1)
    x, y = torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels).long()
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = slice((step * 30) % 120, (step * 30) % 120 + 30)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return tiny_trained(ConvNet(channels=(4, 8), hidden=16))


@pytest.fixture(scope="module")
def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return tiny_trained(build_backbone("mlp", hidden=16))


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    labels, images = tiny_arrays(40, seed=2)
    return torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels).long()


def image_panels(fig) -> int:
    return sum(1 for ax in fig.axes if ax.images)


def test_receptive_fields_and_strides_of_the_notebooks_cnns():
    x = torch.zeros(1, 1, 28, 28)
    cnn = spatial_layers(build_backbone("cnn"), x)
    assert [(s.kind, s.stride, s.receptive_field, s.size) for s in cnn] == [
        ("conv", 1, 3, 28), ("relu", 1, 3, 28), ("pool", 2, 4, 14), ("conv", 2, 8, 14), ("relu", 2, 8, 14), ("pool", 4, 10, 7),
    ]  # fmt: skip
    assert [s.receptive_field for s in spatial_layers(build_backbone("cnn5"), x)] == [5, 5, 6]
    assert spatial_layers(build_backbone("mlp"), x) == []


def test_filters_figure_has_one_panel_per_filter(tiny_cnn, tiny_mlp):
    kernels, kind = first_layer_filters(tiny_cnn)
    assert kind == "conv 3x3" and kernels.shape == (4, 3, 3)
    assert image_panels(figures.filters_figure(kernels, "cnn")) == 4
    rows, kind = first_layer_filters(tiny_mlp)
    assert kind == "linear rows" and rows.shape == (16, 28, 28)  # all 16 rows (limit 32), as 28x28 templates
    assert image_panels(figures.filters_figure(rows, "mlp")) == 16


def test_feature_maps_figure_has_input_plus_channels_per_layer(tiny_cnn, test_images):
    x, y = test_images[0][:10], test_images[1][:10]
    maps = feature_maps(tiny_cnn, x, ["conv.1", "conv.2", "conv.4", "conv.5"])
    assert [tuple(m.shape) for m in maps.values()] == [(10, 4, 28, 28), (10, 4, 14, 14), (10, 8, 14, 14), (10, 8, 7, 7)]
    fig = figures.feature_maps_figure(x, y, {"conv1+relu": maps["conv.1"], "pool1": maps["conv.2"]}, channels=3)
    assert image_panels(fig) == 10 * (1 + 2 * 3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split("\n")[0] for t in titles] == ["conv1+relu"] * 3 + ["pool1"] * 3


def test_attributions_for_conv_and_mlp_side_by_side(tiny_cnn, tiny_mlp, test_images):
    x, y = test_images[0][:10], test_images[1][:10]
    cnn, mlp = attribution_maps(tiny_cnn, x, y, steps=8), attribution_maps(tiny_mlp, x, y, steps=8)
    assert set(cnn) == {"integrated gradients", "occlusion", "grad-cam", "ig delta"}
    assert set(mlp) == {"integrated gradients", "occlusion", "ig delta"}  # no conv layer: no Grad-CAM
    assert all(cnn[k].shape == (10, 28, 28) for k in ("integrated gradients", "occlusion", "grad-cam"))
    cnn.pop("ig delta"), mlp.pop("ig delta")
    fig = figures.attribution_figure(x, y, {"cnn": cnn, "mlp": mlp})
    assert image_panels(fig) == 10 * (1 + 3 + 2)
    assert [ax.get_title() for ax in fig.axes[:6]] == [
        "image", "cnn\nintegrated gradients", "cnn\nocclusion", "cnn\ngrad-cam", "mlp\nintegrated gradients", "mlp\nocclusion"
    ]  # fmt: skip


def test_integrated_gradients_completeness(tiny_cnn, test_images):
    x, y = test_images[0][:10], test_images[1][:10]
    maps, delta = integrated_gradients(tiny_cnn, x, y, steps=64)
    gap = completeness_gap(tiny_cnn, x, y)
    assert gap.abs().min() > 0.1  # a trained model: the logits moved, so 1 % of the gap is a real bound
    assert (delta.abs() <= IG_TOLERANCE * gap.abs()).all()
    # Captum's delta is exactly what completeness says: map sum minus the logit gap.
    torch.testing.assert_close(maps.flatten(1).sum(1) - gap, delta, atol=1e-4, rtol=0)


def test_a_circular_conv_is_exactly_equivariant_under_circular_shifts():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, padding_mode="circular"))
    rows = equivariance_errors(conv, torch.rand(8, 1, 28, 28), shifts=(1, 2, 3, 4), circular=True)
    assert [(r["shift"], r["map_shift"], r["mean"], r["std"]) for r in rows] == [(s, s, 0.0, 0.0) for s in (1, 2, 3, 4)]


def test_a_stride_2_pool_breaks_equivariance_for_odd_shifts_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, padding_mode="circular"), nn.MaxPool2d(2))
    rows = {(r["label"], r["shift"]): r for r in equivariance_errors(net, torch.rand(8, 1, 28, 28), circular=True)}
    assert rows[("pool1", 1)]["mean"] > 0.1 and rows[("pool1", 3)]["mean"] > 0.1
    assert rows[("pool1", 2)]["mean"] == 0.0 and rows[("pool1", 2)]["map_shift"] == 1
    assert rows[("pool1", 4)]["mean"] == 0.0 and rows[("pool1", 4)]["map_shift"] == 2


def test_zero_fill_equivariance_of_a_real_cnn_and_logits_invariance(tiny_cnn, test_images):
    rows = {(r["label"], r["shift"]): r for r in equivariance_errors(tiny_cnn, test_images[0], shifts=(1, 2))}
    assert rows[("conv1", 1)]["mean"] == 0.0  # away from the borders, a zero-padded conv is equivariant too
    assert rows[("pool1", 1)]["mean"] > 0.05 and rows[("pool1", 2)]["mean"] == 0.0
    assert rows[("logits", 1)]["stride"] == 0 and 0 <= rows[("logits", 1)]["agreement"] <= 1
    assert rows[("logits", 1)]["n"] == 2 * 40  # right and down shifts, pooled


def test_shift_fills_with_zeros_or_wraps():
    x = torch.arange(1.0, 5.0).reshape(1, 1, 2, 2)  # [[1, 2], [3, 4]]
    assert shift(x, 0, 1).tolist() == [[[[0, 1], [0, 3]]]]
    assert shift(x, -1, 0).tolist() == [[[[3, 4], [0, 0]]]]
    assert shift(x, 0, 1, circular=True).tolist() == [[[[2, 1], [4, 3]]]]


def test_confident_errors_per_class():
    probs = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.05, 0.95], [0.6, 0.4]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    rows = confident_errors(probs, labels, per_class=1)
    assert [(r["index"], r["true"], r["predicted"]) for r in rows] == [(0, 0, 1), (4, 1, 0)]
    assert math.isclose(rows[0]["confidence"], 0.9, rel_tol=1e-6)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """mlp.pth and cnn5.pth trained for 20 steps, and a data folder with 40 tiny test images."""
    from fashion_conv.data.csvio import write_csv

    tmp = tmp_path_factory.mktemp("explain")
    torch.manual_seed(0)
    for name in ("mlp", "cnn5"):
        torch.save(tiny_trained(build_backbone(name), 20).state_dict(), tmp / f"{name}.pth")
    write_csv(tmp / "data" / "processed" / "fashion-mnist-test.csv", *tiny_arrays(40, seed=2))
    return tmp


def test_report_end_to_end(saved_models):
    out = saved_models / "report"
    args = ["--weights", str(saved_models / "mlp.pth"), "--backbone", "mlp", "--weights", str(saved_models / "cnn5.pth"),
            "--backbone", "cnn5", "--data-dir", str(saved_models / "data"), "--out", str(out), "--steps", "8",
            "--equivariance-images", "20", "--errors-per-class", "1"]  # fmt: skip
    assert main(args) == 0
    report = (out / "report.md").read_text()
    for heading in ("## 1. First-layer filters", "## 2. Feature maps", "## 3. Attributions", "## 4. Translation", "## 5. The most confident"):
        assert heading in report
    assert "python -m fashion_conv.research.explain --weights" in report
    for name in ("filters_mlp.png", "filters_cnn5.png", "feature_maps_cnn5.png", "attributions.png", "equivariance.png",
                 "models.csv", "ig_delta.csv", "equivariance.csv"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert not (out / "feature_maps_mlp.png").exists()
    equivariance = (out / "equivariance.csv").read_text().splitlines()
    assert equivariance[0].startswith("model,layer,label,kind,stride,receptive_field,shift")
    assert {line.split(",")[0] for line in equivariance[1:]} == {"mlp", "cnn5"}


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda p: ["--checkpoint", str(p / "bad.ckpt")], "bad.ckpt: not a PyTorch weights file"),
        (lambda p: ["--weights", str(p / "mlp.pth"), "--backbone", "resnet"], "unknown backbone 'resnet'"),
        (lambda p: ["--weights", str(p / "mlp.pth")], "each --weights needs its --backbone"),
        (lambda p: ["--weights", str(p / "mlp.pth"), "--backbone", "cnn"], "weights do not fit backbone 'cnn'"),
        (lambda p: ["--steps", "x"], "--steps: invalid int value"),
        (lambda p: [], "give a model"),
    ],
)
def test_bad_input_is_one_error_line(saved_models, capsys, make_args, message):
    (saved_models / "bad.ckpt").write_bytes(b"not a checkpoint")
    code = main([*make_args(saved_models), "--data-dir", str(saved_models / "data"), "--out", str(saved_models / "out")])
    err = capsys.readouterr().err
    assert code in (1, 2) and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (saved_models / "out").exists()


@pytest.mark.parametrize("on", [True, False])
def test_fit_shows_filters_feature_maps_and_attributions_in_tensorboard(tiny_data_dir, tmp_path, on):
    from test_fit import fit_args, tensorboard_tags

    from fashion_conv.fit import main as fit

    kwargs = ["--model.backbone", "convnet", "--model.backbone_kwargs", '{"channels": [4], "hidden": 0}', "--trainer.max_epochs", "1"]
    assert fit([*fit_args(tiny_data_dir, tmp_path), *kwargs, "--explain_figures", str(on).lower()]) == 0
    tags = tensorboard_tags(tmp_path / "lightning_logs" / "convnet" / "version_0")
    explain = {t for t in tags["images"] if t.startswith("explain/")}
    expected = {"explain/filters", "explain/feature_maps/conv1+relu", "explain/feature_maps/pool1", "explain/attributions"}
    assert explain == (expected if on else set())
    assert ("explain/seconds" in tags["scalars"]) == on
