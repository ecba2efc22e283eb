"""Make sure ``data/processed/fashion-mnist-{train,test}.csv`` (the notebook's input) exist, building them from the
official IDX files: ``prepare_data`` is what ``FashionMNISTDataModule.prepare_data`` and ``python -m
fashion_conv.prepare`` call."""

from __future__ import annotations

import sys
from pathlib import Path

from fashion_conv.data import idx
from fashion_conv.data.csvio import write_csv
from fashion_conv.utils.errors import DataError


def csv_paths(data_dir: str | Path) -> dict[str, Path]:
    processed = Path(data_dir) / "processed"
    return {split: processed / f"fashion-mnist-{split}.csv" for split in idx.SPLITS}


def prepare_data(
    data_dir: str | Path = "data",
    force: bool = False,
    specs: dict[str, idx.IdxSpec] = idx.OFFICIAL,
    system_dir: str | Path | None = idx.SYSTEM_DIR,
    mirror: str | None = None,
) -> dict[str, Path]:
    """Make sure both CSVs exist under ``data_dir/processed``; build them from checked IDX files if not."""
    paths = csv_paths(data_dir)
    if not force and all(p.is_file() for p in paths.values()):
        return paths
    # Announced, since it takes seconds; under DDP only local rank 0 gets here (Lightning's prepare_data).
    print(f"Preparing {paths['train'].parent} from the official Fashion-MNIST IDX files", file=sys.stderr)
    arrays = idx.load_raw(Path(data_dir) / "raw", specs, system_dir, mirror)
    for split, (images_name, labels_name) in idx.SPLITS.items():
        images, labels = arrays[images_name], arrays[labels_name]
        if len(images) != len(labels):
            raise DataError(images_name, f"{len(images)} images but {len(labels)} labels in {labels_name}")
        write_csv(paths[split], labels, images)
    return paths
