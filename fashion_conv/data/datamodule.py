"""``FashionMNISTDataModule``: the CSV dataset in memory as uint8 tensors, served in batches by slicing.

``prepare_data`` only makes sure the CSV files exist (building them from the official IDX files if
needed); ``setup(stage)`` parses them (cached) and builds the train/validation split.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from fashion_conv.data.augment import augment, step_generator
from fashion_conv.data.classes import CLASS_NAMES
from fashion_conv.data.csvio import read_csv
from fashion_conv.utils.errors import ArgumentValueError, FashionConvError
from fashion_conv.data.files import csv_paths, prepare_data



class InMemoryImages(Dataset):
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 held as tensors.

    ``__getitems__`` lets a standard ``DataLoader`` fetch a whole batch with one indexing op; pixels
    become float32 in [0, 1] per batch, so memory stays at one byte a pixel.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float().div_(255), self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, device=self.images.device)
        return self.images[idx].float().div_(255), self.labels[idx]

    def to(self, device: torch.device) -> InMemoryImages:
        """The same images on ``device``: on a GPU the batches are then cut there, with no copy per step."""
        if self.images.device == device:
            return self
        return InMemoryImages(self.images.to(device), self.labels.to(device))


def _batch_as_is(batch):
    """``__getitems__`` already returns a collated (x, y) batch."""
    return batch


class EpochShuffle(Sampler[int]):
    """A shuffle whose order depends only on (seed, epoch), so a resumed run sees the same batches.

    Lightning calls ``set_epoch`` before each training epoch. ``resume_at`` makes the next pass over
    ``epoch`` start ``offset`` samples in, for a run resumed from a mid-epoch checkpoint.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, offset: int) -> None:
        self._resume = (epoch, offset)

    def __iter__(self):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        order = torch.randperm(self.n, generator=g)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
            self._resume = None
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.n


class FashionMNISTDataModule(L.LightningDataModule):
    """Fashion-MNIST from ``<data_dir>/processed/fashion-mnist-{train,test}.csv``.

    Args:
        data_dir: folder with ``raw/`` and ``processed/``; the CSVs are built there if missing.
        batch_size: training batch size (the notebook's 64).
        val_size: images held out of the train CSV for validation.
        split_seed: seed of the train/validation split (fixed across runs, so runs compare on the same split).
        shuffle_seed: seed of the per-epoch shuffle; ``None`` takes the run's global seed (``seed_everything``).
        eval_batch_size: batch size for validation and test (no gradients, so larger is faster).
        num_workers: DataLoader workers; 0 is right for in-memory data.
        download: allow a download from the official mirror when no local copy is found.
        data_on_device: keep the images on the training device (a GPU), so batches are cut there without a
            host-to-device copy per step; with ``num_workers > 0`` they stay on the host.
        random_shift: training augmentation: move each image by up to this many pixels on each axis (0: off).
        hflip: training augmentation: mirror half of the images left-right.
        random_erasing: training augmentation: probability of filling one random rectangle (2-25 % of the
            image) of each image with noise (0: off).
        train_size: train on only the first N images of the shuffled training split (the validation split is
            taken first, so it does not change); ``None`` uses all of it.
        pixel_permutation_seed: shuffle the 784 pixels of every train, validation and test image by one fixed
            permutation drawn from this seed (destroys spatial structure, keeps pixel values); ``None``: no shuffle.
        test_size: test on a fixed random subset of N test images (drawn with ``split_seed``, kept in file
            order), for quick studies; ``None`` tests on all of them.
    """

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: int = 64,
        val_size: int = 5000,
        split_seed: int = 0,
        shuffle_seed: int | None = None,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        download: bool = True,
        data_on_device: bool = True,
        random_shift: int = 0,
        hflip: bool = False,
        random_erasing: float = 0.0,
        train_size: int | None = None,
        pixel_permutation_seed: int | None = None,
        test_size: int | None = None,
    ):  # pragma: no mutate block (for mutmut: save_hyperparameters() reads this frame)
        super().__init__()
        for name, value, low in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1), ("val_size", val_size, 0), ("random_shift", random_shift, 0)):
            if value < low:
                raise ArgumentValueError(name, f"must be at least {low}, got {value}")
        if not 0 <= random_erasing <= 1:
            raise ArgumentValueError("random_erasing", f"is a probability in [0, 1], got {random_erasing}")
        for name, value in (("train_size", train_size), ("test_size", test_size)):
            if value is not None and value < 1:
                raise ArgumentValueError(name, f"must be at least 1, got {value}")
        data_dir = str(data_dir)  # a Path in the hyperparameters would make every checkpoint fail a weights-only load
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.class_names = CLASS_NAMES
        self.train_set = self.val_set = self.test_set = None
        self.pixel_permutation: torch.Tensor | None = None  # (784,), set by setup() when pixel_permutation_seed is given

    def prepare_data(self) -> None:
        if not self.data_dir.is_dir():
            raise ArgumentValueError("data_dir", f"{str(self.data_dir)!r} does not exist (cwd: {Path.cwd()}); create it or choose another")
        prepare_data(self.data_dir, mirror=None if self.hparams.download else "")

    def setup(self, stage: str | None = None) -> None:
        paths = csv_paths(self.data_dir)
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self._load_split(paths["train"])
            n_val = self.hparams.val_size
            if n_val >= len(labels):
                raise ArgumentValueError("val_size", f"{n_val} leaves no training images: {paths['train']} has {len(labels)} rows")
            order = seeded_permutation(len(labels), self.hparams.split_seed)
            train_idx, val_idx = order[n_val:], order[:n_val]
            n_train = self.hparams.train_size
            if n_train is not None:
                if n_train > len(train_idx):
                    raise ArgumentValueError("train_size", f"{n_train} is more than the {len(train_idx)} images left after validation")
                train_idx = train_idx[:n_train]
            self.train_set = InMemoryImages(images[train_idx], labels[train_idx])
            self.val_set = InMemoryImages(images[val_idx], labels[val_idx])
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self._load_split(paths["test"])
            n_test = self.hparams.test_size
            if n_test is not None and n_test < len(labels):  # pragma: no mutate
                keep = seeded_permutation(len(labels), self.hparams.split_seed)[:n_test].sort().values  # in file order
                images, labels = images[keep], labels[keep]
            self.test_set = InMemoryImages(images, labels)

    def _load_split(self, csv_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """``_load``, then the fixed pixel permutation when ``pixel_permutation_seed`` is set (same for every split)."""
        images, labels = _load(csv_path)
        seed = self.hparams.pixel_permutation_seed
        if seed is not None:
            self.pixel_permutation = pixel_permutation(seed)
            images = permute_pixels(images, self.pixel_permutation)
        return images, labels

    def _shuffle_seed(self) -> int:
        seed = self.hparams.shuffle_seed
        return torch.initial_seed() if seed is None else seed

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment training batches where they are, after the move to the device; evaluation batches pass as is."""
        trainer, hp = self.trainer, self.hparams
        if trainer is None or not trainer.training or not (hp.random_shift or hp.hflip or hp.random_erasing):
            return batch
        return self._augment(batch, trainer.global_step)

    def _augment(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        hp = self.hparams
        x, y = batch
        generator = step_generator(self._shuffle_seed(), step, x.device)
        return augment(x, hp.random_shift, hp.hflip, generator, hp.random_erasing), y

    def train_dataloader(self) -> DataLoader:
        seed = self._shuffle_seed()
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # Several processes: each takes its shard of the same (seed, epoch) shuffle.
            sampler = DistributedSampler(self.train_set, trainer.world_size, trainer.global_rank, shuffle=True, seed=seed % 2**63)
        else:
            sampler = EpochShuffle(len(self.train_set), seed)
        return self._loader(self.train_set, self.hparams.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size, sampler=self._eval_sampler(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size, sampler=self._eval_sampler(self.test_set))

    def _eval_sampler(self, dataset: InMemoryImages) -> Sampler | None:
        """Several processes and a split they divide evenly (5,000 and 10,000 by 2, 4, 8): shards that see each image once.

        Otherwise ``None``: Lightning's sampler pads the shards with repeated images, and its warning says so.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1 or len(dataset) % trainer.world_size:
            return None
        return DistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test set in file order, as ``(x, y)`` batches; ``predict_step`` ignores ``y``."""
        return self._loader(self.test_set, self.hparams.eval_batch_size)

    def _loader(self, dataset: InMemoryImages, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        trainer = self.trainer
        if self.hparams.data_on_device and self.hparams.num_workers == 0 and trainer is not None:
            dataset = dataset.to(trainer.strategy.root_device)  # 47 MB of uint8 for the train split
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_batch_as_is,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )


def _load(csv_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 28, 28) uint8 images and (N,) int64 labels from a validated CSV."""
    if not csv_path.is_file():
        raise FashionConvError(f"{csv_path} not found; run `python -m fashion_conv.prepare` or let prepare_data() build it")
    labels, images = read_csv(csv_path)
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels).long()


def seeded_permutation(n: int, seed: int) -> torch.Tensor:
    """A permutation of ``range(n)`` that depends only on ``seed`` (not on the global RNG): splits, subsets, pixels."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def pixel_permutation(seed: int, num_pixels: int = 28 * 28) -> torch.Tensor:
    """A fixed permutation of the pixel positions (num_pixels,), a function of ``seed`` only."""
    return seeded_permutation(num_pixels, seed)


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) with their H*W pixels reordered: output pixel i is input pixel ``permutation[i]``."""
    return images.flatten(2)[:, :, permutation].reshape(images.shape)
