"""FashionMNISTDataModule: shapes, dtypes, ranges, split sizes and seeds, prepare_data from raw files."""

import functools

import pytest
import torch

import fashion_conv.data.datamodule as datamodule_module
from fashion_conv.data.csvio import read_csv
from fashion_conv.data.files import prepare_data

from fashion_conv import CLASS_NAMES, FashionMNISTDataModule
from fashion_conv.utils.errors import FashionConvError


def make(data_dir, **kw) -> FashionMNISTDataModule:
    dm = FashionMNISTDataModule(data_dir=data_dir, val_size=20, batch_size=16, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_shapes_dtypes_ranges(tiny_data_dir):
    dm = make(tiny_data_dir)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert set(y.tolist()) <= set(range(10))
    assert len(CLASS_NAMES) == 10 and dm.class_names[9] == "Ankle boot"


def test_split_sizes_cover_the_train_csv_once(tiny_data_dir):
    dm = make(tiny_data_dir)
    assert len(dm.train_set) == 100 and len(dm.val_set) == 20
    seen = sum(len(y) for _, y in dm.train_dataloader())
    assert seen == 100
    # and cover it: every CSV row (label and pixels) is in exactly one split, served once per epoch
    labels, images = read_csv(tiny_data_dir / "processed" / "fashion-mnist-train.csv")
    rows = sorted(bytes([label]) + image.tobytes() for label, image in zip(labels, images))
    val = [bytes([int(y)]) + x.numpy().tobytes() for x, y in zip(dm.val_set.images, dm.val_set.labels)]
    served = [bytes([int(y)]) + (x * 255).round().to(torch.uint8).numpy().tobytes() for xb, yb in dm.train_dataloader() for x, y in zip(xb, yb)]
    assert len(set(rows)) == 120 and sorted(served + val) == rows
    dm.setup("test")
    assert len(dm.test_set) == 40 and sum(len(y) for _, y in dm.test_dataloader()) == 40


def test_split_is_driven_by_its_seed(tiny_data_dir):
    def val_images(seed):
        return make(tiny_data_dir, split_seed=seed).val_set.images

    assert torch.equal(val_images(0), val_images(0))
    assert not torch.equal(val_images(0), val_images(1))


def test_shuffle_depends_on_seed_and_epoch_only(tiny_data_dir):
    def first_labels(shuffle_seed, epoch):
        loader = make(tiny_data_dir, shuffle_seed=shuffle_seed).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    assert first_labels(1, 0) == first_labels(1, 0)
    assert first_labels(1, 0) != first_labels(1, 1)
    assert first_labels(1, 0) != first_labels(2, 0)
    assert sorted(first_labels(1, 0)) == sorted(first_labels(2, 3))


def test_the_shuffle_of_any_seed_is_torchs_randperm_of_the_mixed_seed(tiny_data_dir):
    from torch.utils.data import DistributedSampler

    from fashion_conv.data.datamodule import EpochShuffle

    for seed, epoch in ((0, 0), (7, 3), (2**62, 1)):  # 2**62 x 1_000_003 passes 2**63: the seed wraps there
        sampler = EpochShuffle(50, seed)
        sampler.set_epoch(epoch)
        mixed = (seed * 1_000_003 + epoch) % 2**63
        assert list(sampler) == torch.randperm(50, generator=torch.Generator().manual_seed(mixed)).tolist()
    # Under DDP each process takes its shard of one shuffle (a trainer for 2 processes, not launched).
    from lightning import Trainer

    dm = make(tiny_data_dir, shuffle_seed=2**63 + 5)  # torch seeds are below 2**63 here
    dm.trainer = Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False)
    sampler = dm.train_dataloader().sampler
    assert type(sampler) is DistributedSampler and (sampler.num_replicas, sampler.rank, sampler.shuffle) == (2, 0, True)
    assert sampler.seed == 5 and len(list(sampler)) == 50


def test_prepare_data_builds_csvs_from_raw_idx(tiny_idx, tmp_path, monkeypatch):
    src, specs = tiny_idx
    # The same code path as the CLI, with the tiny files' specs instead of the official ones.
    monkeypatch.setattr(datamodule_module, "prepare_data", functools.partial(prepare_data, specs=specs, system_dir=src))
    (tmp_path / "data").mkdir()
    dm = make(tmp_path / "data")
    assert (tmp_path / "data/processed/fashion-mnist-train.csv").is_file()
    assert len(dm.train_set) == 100


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"val_size": -1}, "val_size must be at least 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(FashionConvError, match=message):
        FashionMNISTDataModule(**kwargs)


def test_val_size_larger_than_train_set(tiny_data_dir):
    dm = FashionMNISTDataModule(data_dir=tiny_data_dir, val_size=500)
    with pytest.raises(FashionConvError, match="val_size 500 leaves no training images.*has 120 rows"):
        dm.setup("fit")


def test_missing_data_dir(tmp_path):
    with pytest.raises(FashionConvError, match="does not exist"):
        FashionMNISTDataModule(data_dir=tmp_path / "nope").prepare_data()


def test_each_ddp_process_takes_its_shard_of_the_seeded_shuffle(tiny_data_dir):
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    shards = []
    for rank in (0, 1):
        dm = make(tiny_data_dir, shuffle_seed=5, data_on_device=False)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what a 2-process DDP run's trainer says
        sampler = dm.train_dataloader().sampler
        assert list(sampler) == list(DistributedSampler(range(100), num_replicas=2, rank=rank, shuffle=True, seed=5))
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == list(range(100))  # together: every training image once


@pytest.mark.parametrize("option", [{"random_shift": 2}, {"hflip": True}, {"random_erasing": 0.5}])
def test_each_augmentation_alone_draws_from_the_step_seeded_generator(tiny_data_dir, option):
    import lightning as L

    from fashion_conv.data.augment import augment, step_generator

    dm = make(tiny_data_dir, shuffle_seed=3, **option)
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    dm.trainer.training = True
    x, y = next(iter(dm.train_dataloader()))
    out, labels = dm.on_after_batch_transfer((x, y), 0)
    kwargs = {"max_shift": 0, "hflip": False, "erase_p": 0.0}
    kwargs.update({{"random_shift": "max_shift", "hflip": "hflip", "random_erasing": "erase_p"}[k]: v for k, v in option.items()})
    expected = augment(x, kwargs["max_shift"], kwargs["hflip"], step_generator(3, 0, x.device), kwargs["erase_p"])
    assert torch.equal(out, expected) and not torch.equal(out, x) and labels is y


def test_in_memory_images_move_to_a_device_together():
    from fashion_conv.data.datamodule import InMemoryImages

    data = InMemoryImages(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), torch.arange(3))
    assert data.to(torch.device("cpu")) is data  # already there: no copy
    moved = data.to(torch.device("meta"))  # a device other than the CPU, on any machine
    assert moved.images.device.type == moved.labels.device.type == "meta"
    assert moved.images.shape == (3, 1, 28, 28) and moved.labels.shape == (3,)


def test_ddp_evaluation_shards_see_each_image_once_or_are_left_to_lightning(tiny_data_dir):
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    dm = make(tiny_data_dir, data_on_device=False)  # 20 validation images, 40 test images
    dm.setup("test")
    for name in ("val_dataloader", "test_dataloader"):
        n = 20 if name == "val_dataloader" else 40
        assert not isinstance(getattr(dm, name)().sampler, DistributedSampler)  # no trainer: file order
        shards = []
        for rank in (0, 1):
            dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
            shards.append(list(getattr(dm, name)().sampler))
            assert shards[-1] == list(range(rank, n, 2))  # in order, every second image
        for world_size in (1, 3):  # one process, or a split that 3 does not divide: Lightning's own sampler
            dm.trainer = SimpleNamespace(world_size=world_size, global_rank=0)
            assert not isinstance(getattr(dm, name)().sampler, DistributedSampler)
        dm.trainer = None


def test_pixel_permutation_and_permute_pixels_exactly():
    from fashion_conv.data.datamodule import permute_pixels, pixel_permutation

    assert torch.equal(pixel_permutation(3), torch.randperm(784, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(pixel_permutation(3, 6), torch.randperm(6, generator=torch.Generator().manual_seed(3)))
    images = torch.arange(2 * 1 * 2 * 3).reshape(2, 1, 2, 3)  # (N, C, H, W)
    perm = torch.tensor([5, 0, 1, 2, 3, 4])
    assert permute_pixels(images, perm).tolist() == [[[[5, 0, 1], [2, 3, 4]]], [[[11, 6, 7], [8, 9, 10]]]]


def test_setup_for_validate_alone_makes_the_same_validation_split(tiny_data_dir):
    fit = make(tiny_data_dir)
    alone = FashionMNISTDataModule(data_dir=tiny_data_dir, val_size=20, batch_size=16)
    alone.setup("validate")  # Trainer.validate(datamodule=...) without a fit
    assert torch.equal(alone.val_set.images, fit.val_set.images) and torch.equal(alone.val_set.labels, fit.val_set.labels)


def test_split_sizes_at_their_limits_and_the_test_subset(tiny_data_dir):
    from fashion_conv.data.datamodule import permute_pixels, pixel_permutation, seeded_permutation

    dm = lambda **kw: FashionMNISTDataModule(data_dir=tiny_data_dir, **kw)  # noqa: E731
    with pytest.raises(FashionConvError):
        dm(val_size=120).setup("fit")  # all 120 rows for validation: none left to train on
    fit = dm(val_size=119, train_size=1)
    fit.setup("fit")  # the limits themselves are allowed
    assert (len(fit.train_set), len(fit.val_set)) == (1, 119) and fit.test_set is None  # fit loads no test set
    with pytest.raises(FashionConvError) as info:
        dm(val_size=20, train_size=101).setup("fit")
    assert str(info.value) == "train_size 101 is more than the 100 images left after validation"
    full = dm()
    full.setup("predict")
    assert len(full.test_set) == 40 and full.train_set is None
    part = dm(test_size=10, split_seed=4)
    part.setup("test")
    keep = seeded_permutation(40, 4)[:10].sort().values  # a seeded subset, in file order
    assert torch.equal(part.test_set.images, full.test_set.images[keep]) and torch.equal(part.test_set.labels, full.test_set.labels[keep])
    permuted = dm(pixel_permutation_seed=3)
    permuted.setup("predict")
    assert torch.equal(permuted.pixel_permutation, pixel_permutation(3))
    assert torch.equal(permuted.test_set.images, permute_pixels(full.test_set.images, pixel_permutation(3)))


def test_missing_data_messages_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FashionConvError) as info:
        FashionMNISTDataModule(data_dir=missing).prepare_data()
    assert str(info.value).startswith(f"data_dir {str(missing)!r} does not exist (cwd: ")
    with pytest.raises(FashionConvError) as info:
        FashionMNISTDataModule(data_dir=tmp_path).setup("fit")
    assert str(info.value).startswith(f"{tmp_path / 'processed' / 'fashion-mnist-train.csv'} not found; run ")


@pytest.mark.parametrize("download,mirror", [(True, None), (False, "")])
def test_prepare_data_passes_the_download_choice_as_the_mirror(tmp_path, monkeypatch, download, mirror):
    calls = []
    monkeypatch.setattr(datamodule_module, "prepare_data", lambda *args, **kwargs: calls.append((args, kwargs)))
    FashionMNISTDataModule(data_dir=tmp_path, download=download).prepare_data()
    assert calls == [((tmp_path,), {"mirror": mirror})]  # None: the default mirror; "": never download


def test_loaders_move_the_images_to_the_trainers_device_only_without_workers(tiny_data_dir):
    from types import SimpleNamespace

    def loader(**kw):
        dm = make(tiny_data_dir, **kw)
        dm.setup("fit")
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")), world_size=1)  # a stand-in device
        return dm.val_dataloader()

    on_device = loader()
    assert on_device.dataset.images.device.type == "meta" and (on_device.num_workers, on_device.persistent_workers) == (0, False)
    for kw, workers in (({"num_workers": 1}, 1), ({"num_workers": 2}, 2), ({"data_on_device": False}, 0)):
        kept = loader(**kw)  # worker processes cut batches on the CPU; data_on_device false keeps them there
        assert kept.dataset.images.device.type == "cpu" and (kept.num_workers, kept.persistent_workers) == (workers, workers > 0), kw
