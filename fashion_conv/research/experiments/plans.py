"""What each experiment trains: the variants (a backbone, its options, its data) and the two presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXPERIMENTS = ("compare", "kernel", "translation", "permutation", "efficiency")


@dataclass(frozen=True)
class Variant:
    """One model-and-data configuration, trained once per seed. Hashable, so experiments share runs."""

    label: str  # in tables and plots, e.g. "convnet k=5"
    backbone: str
    kwargs: tuple[tuple[str, Any], ...] = ()  # backbone arguments as sorted (name, value) pairs
    train_size: int | None = None  # None: the preset's training-set size
    permuted: bool = False  # pixels shuffled by the experiment's fixed permutation

    @property
    def slug(self) -> str:
        """Folder-safe name: ``convnet k=5`` -> ``convnet-k5``."""
        return "-".join(self.label.replace("=", "").replace(",", "_").split())

    @property
    def backbone_kwargs(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs}


@dataclass(frozen=True)
class Conditions:
    """What every run of a report shares, so runs differ only in their variant and seed."""

    data_dir: str
    epochs: int
    train_size: int | None
    val_size: int
    test_size: int | None
    batch_size: int = 64
    lr: float = 1e-3
    precision: str = "32-true"
    accelerator: str = "auto"
    split_seed: int = 0  # train/validation split and the test_size subset, the same for every run
    permutation_seed: int = 0  # the one pixel permutation of the permutation experiment


@dataclass(frozen=True)
class Preset:
    seeds: int
    epochs: int
    train_size: int | None  # None: all 55,000 images left after validation
    val_size: int
    test_size: int | None  # None: the official 10,000; else a fixed random subset
    kernel_sizes: tuple[int, ...]
    max_shift: int
    train_sizes: tuple[int, ...]  # sample efficiency, besides the preset's full training set
    mlp_hidden: tuple[int, ...]  # parameter efficiency: MLP widths besides the notebook's 256
    conv_channels: tuple[tuple[int, ...], ...]  # parameter efficiency: convnet widths besides cnn's (32, 64)


PRESETS = {
    "full": Preset(
        seeds=3, epochs=5, train_size=None, val_size=5000, test_size=None, kernel_sizes=(3, 5, 7), max_shift=6,
        train_sizes=(1000, 5000, 20000), mlp_hidden=(64, 1024), conv_channels=((8, 16), (16, 32)),
    ),
    "quick": Preset(
        seeds=2, epochs=2, train_size=3000, val_size=1000, test_size=2000, kernel_sizes=(3, 5, 7), max_shift=4,
        train_sizes=(500, 1000), mlp_hidden=(64, 1024), conv_channels=((8, 16), (16, 32)),
    ),
}  # fmt: skip

NOTEBOOK = (Variant("mlp", "mlp"), Variant("cnn", "cnn"), Variant("cnn5", "cnn5"))


def kernel_variant(k: int) -> Variant:
    """``convnet`` with cnn's layout (channels 32, 64, max-pool, FC 128) and only the kernel size changed."""
    return Variant(f"convnet k={k}", "convnet", (("kernel_size", k),))


def variants(experiment: str, preset: Preset) -> list[Variant]:
    """The variants ``experiment`` needs, in table order."""
    if experiment in ("compare", "translation"):
        return list(NOTEBOOK)
    if experiment == "kernel":
        return [kernel_variant(k) for k in preset.kernel_sizes] + [NOTEBOOK[1], NOTEBOOK[2]]
    if experiment == "permutation":
        return list(NOTEBOOK) + [Variant(f"{v.label} permuted", v.backbone, permuted=True) for v in NOTEBOOK]
    if experiment == "efficiency":
        widths = [Variant(f"mlp h={h}", "mlp", (("hidden", h),)) for h in preset.mlp_hidden]
        widths += [
            Variant(f"convnet c={','.join(map(str, c))}", "convnet", (("channels", c),)) for c in preset.conv_channels
        ]
        sizes = [Variant(f"{v.label} n={n}", v.backbone, train_size=n) for n in preset.train_sizes for v in NOTEBOOK]
        return list(NOTEBOOK) + widths + sizes
    raise ValueError(f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")


def plan(experiments: list[str], preset: Preset) -> dict[Variant, list[str]]:
    """Each distinct variant once, with the experiments that use it (the first one is its TensorBoard group)."""
    users: dict[Variant, list[str]] = {}
    for experiment in experiments:
        for variant in variants(experiment, preset):
            users.setdefault(variant, []).append(experiment)
    return users
