"""``python -m fashion_conv.research.experiments``: the probes, the DataModule options they need, the kernel ablation, the report."""

import dataclasses

import pandas as pd
import pytest
import torch
from torch import nn

from fashion_conv import FashionMNISTDataModule
from fashion_conv.models.backbones import build_backbone, count_parameters
from fashion_conv.data.datamodule import permute_pixels
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.research.experiments import plans
from fashion_conv.research.experiments.cli import main
from fashion_conv.data.augment import shift
from fashion_conv.research.experiments.probes import shifted_copies
from fashion_conv.research.experiments.stats import verdict


def shift_images(images, dx, dy):
    return shift(images, torch.tensor([dy]), torch.tensor([dx]))


def test_shift_moves_pixels_by_exactly_k_with_zero_fill():
    image = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5)  # values 1..25, so a 0 can only be fill
    right2_down1 = torch.tensor(
        [[0, 0, 0, 0, 0],
         [0, 0, 1, 2, 3],
         [0, 0, 6, 7, 8],
         [0, 0, 11, 12, 13],
         [0, 0, 16, 17, 18]], dtype=torch.float32,
    )  # fmt: skip
    assert torch.equal(shift_images(image, 2, 1)[0, 0], right2_down1)
    left1_up2 = torch.zeros(5, 5)
    left1_up2[:3, :4] = image[0, 0, 2:, 1:]
    assert torch.equal(shift_images(image, -1, -2)[0, 0], left1_up2)
    assert torch.equal(shift_images(image, 0, 0), image)
    assert not shift_images(image, 5, 0).any() and not shift_images(image, 0, -7).any()
    # k on both axes in the four diagonal directions: 4 copies, each k pixels from the original on each axis
    copies = shifted_copies(image, 1)
    assert copies.shape == (4, 1, 5, 5)
    assert {tuple(c[0, 2, 1:4].tolist()) for c in copies} >= {(6.0, 7.0, 8.0), (8.0, 9.0, 10.0)}
    assert torch.equal(shifted_copies(image, 0), image)


def load(data_dir, **kw) -> FashionMNISTDataModule:
    dm = FashionMNISTDataModule(data_dir=data_dir, val_size=20, batch_size=16, **kw)
    dm.setup()
    return dm


def test_pixel_permutation_is_fixed_and_the_same_for_train_val_test(tiny_data_dir):
    plain, shuffled = load(tiny_data_dir), load(tiny_data_dir, pixel_permutation_seed=3)
    perm = shuffled.pixel_permutation
    assert (
        perm.shape == (784,)
        and torch.equal(perm.sort().values, torch.arange(784))
        and not torch.equal(perm, torch.arange(784))
    )
    for split in ("train_set", "val_set", "test_set"):
        before, after = getattr(plain, split), getattr(shuffled, split)
        assert torch.equal(after.labels, before.labels)
        # one permutation P for all three splits: shuffled pixel i is original pixel P[i]
        assert torch.equal(after.images.flatten(1), before.images.flatten(1)[:, perm])
        assert torch.equal(after.images, permute_pixels(before.images, perm))
    assert torch.equal(load(tiny_data_dir, pixel_permutation_seed=3).pixel_permutation, perm)  # fixed by its seed
    assert not torch.equal(load(tiny_data_dir, pixel_permutation_seed=4).pixel_permutation, perm)
    assert plain.pixel_permutation is None


def test_train_size_takes_the_first_n_of_the_shuffled_split(tiny_data_dir):
    full, small = load(tiny_data_dir), load(tiny_data_dir, train_size=30)
    assert len(full.train_set) == 100 and len(small.train_set) == 30
    assert torch.equal(small.train_set.images, full.train_set.images[:30])
    assert torch.equal(small.val_set.images, full.val_set.images)  # validation is taken first, unchanged
    with pytest.raises(FashionConvError, match="train_size 101 is more than the 100 images"):
        load(tiny_data_dir, train_size=101)
    with pytest.raises(FashionConvError, match="train_size must be at least 1"):
        FashionMNISTDataModule(tiny_data_dir, train_size=0)


def layer_configs(net: nn.Module) -> list[dict]:
    """Each layer's type and settings; conv layers without their kernel size and padding."""
    configs = []
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            configs.append(
                {"name": name, "in": m.in_channels, "out": m.out_channels, "stride": m.stride, "groups": m.groups}
            )
        elif isinstance(m, nn.Linear):
            configs.append({"name": name, "in": m.in_features, "out": m.out_features})
        elif name and not list(m.children()):
            configs.append({"name": name, "layer": repr(m)})
    return configs


def test_kernel_ablation_variants_differ_only_in_kernel_size():
    ablation = [v for v in plans.variants("kernel", plans.PRESETS["full"]) if v.backbone == "convnet"]
    assert [dict(v.kwargs) for v in ablation] == [{"kernel_size": k} for k in (3, 5, 7)]
    nets = [build_backbone(v.backbone, **v.backbone_kwargs) for v in ablation]
    x = torch.rand(2, 1, 28, 28)
    for net, k in zip(nets, (3, 5, 7)):
        assert layer_configs(net) == layer_configs(nets[0])
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert all(m.kernel_size == (k, k) and m.padding == (k // 2, k // 2) for m in convs)  # 'same' padding
        assert net.conv(x).shape == nets[0].conv(x).shape == (2, 64, 7, 7)
        assert count_parameters(net.fc) == count_parameters(nets[0].fc)  # only the conv weights grow with k
    assert count_parameters(nets[1]) - count_parameters(nets[0]) == (25 - 9) * (1 * 32 + 32 * 64)


def test_convnet_with_kernel_3_is_the_notebook_cnn():
    convnet, cnn = build_backbone("convnet", kernel_size=3), build_backbone("cnn")
    assert count_parameters(convnet) == count_parameters(cnn) == 421_642
    assert repr(convnet.conv) == repr(cnn.conv) and repr(convnet.fc) == repr(cnn.fc)
    convnet.load_state_dict(cnn.state_dict())  # same keys, same shapes
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(convnet(x), cnn(x))
    with pytest.raises(ValueError, match="odd"):
        build_backbone("convnet", kernel_size=4)


def test_verdict_says_whether_a_gap_exceeds_the_seeds_spread():
    assert "larger than the spread" in verdict("a", [0.90, 0.91], "b", [0.85, 0.86])
    assert "within the spread" in verdict("a", [0.90, 0.86], "b", [0.85, 0.88])
    assert "single seed" in verdict("a", [0.90], "b", [0.85])


def test_pipeline_writes_report_results_and_figures(tiny_data_dir, tmp_path, monkeypatch):
    # A smaller quick preset: two extra widths instead of four; the command line trims the rest.
    quick = dataclasses.replace(plans.PRESETS["quick"], mlp_hidden=(32,), conv_channels=((4, 8),))
    monkeypatch.setitem(plans.PRESETS, "quick", quick)
    out, logs = tmp_path / "report", tmp_path / "tb"
    argv = [
        "--preset", "quick", "--data-dir", str(tiny_data_dir), "--out", str(out), "--logs-dir", str(logs),
        "--seeds", "2", "--epochs", "1", "--train-size", "60", "--val-size", "20", "--test-size", "30",
        "--kernel-sizes", "3,5", "--train-sizes", "30", "--max-shift", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    figures = ["compare_curves.png", "kernel.png", "kernel_curves.png", "translation.png", "permutation.png",
               "permutation_curves.png", "params.png", "samples.png"]  # fmt: skip
    report = (out / "report.md").read_text()
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and name in report
    for heading in (
        "## 1. mlp vs cnn vs cnn5",
        "## 2. Kernel size",
        "## 3. Translation",
        "## 4. Permutation",
        "## 5. Parameter",
    ):
        assert heading in report
    assert "--max-shift 1" in report and "| seeds | 0, 1" in report and "cnn and cnn5 differ in" in report
    results = pd.read_csv(out / "results.csv")
    # compare 3, kernel +2, permutation +3, efficiency +2 widths +3 sizes; each with seeds 0 and 1
    assert len(results) == 26 and sorted(results["seed"].unique()) == [0, 1]
    assert set(results.loc[results["permuted"], "variant"]) == {"mlp permuted", "cnn permuted", "cnn5 permuted"}
    assert set(results.loc[results["train_images"] == 30, "variant"]) == {"mlp n=30", "cnn n=30", "cnn5 n=30"}
    probed = results.dropna(subset=["shift_1"])
    assert set(probed["variant"]) == {"mlp", "cnn", "cnn5"}
    assert (probed["shift_0"] - probed["test_acc"]).abs().max() < 1e-6  # shift 0 is the test set itself
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 26 and curves[["train_loss", "train_acc", "val_loss", "val_acc"]].notna().all().all()
    assert list((logs / "compare" / "cnn-seed1").glob("events.out.tfevents.*"))
    assert list((logs / "permutation" / "cnn5-permuted-seed0").glob("events.out.tfevents.*"))


def test_bad_command_lines_fail_with_one_line(capsys):
    assert main(["--experiments", "compare,colour"]) == 2
    assert "unknown experiment colour" in capsys.readouterr().err
    assert main(["--kernel-sizes", "3,4"]) == 1
    assert "--kernel-sizes must be odd" in capsys.readouterr().err
