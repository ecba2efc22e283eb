"""Turn the official IDX files into ``data/processed/fashion-mnist-{train,test}.csv`` (the notebook's input).

Run as ``python -m fashion_conv.prepare`` (or ``python scripts/prepare_data.py``); the DataModule's
``prepare_data()`` calls the same :func:`prepare_data` when the CSVs are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashion_conv import idx
from fashion_conv.csvio import write_csv
from fashion_conv.errors import DataError, FashionConvError


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_conv.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="folder holding raw/ and processed/ (default: data)")
    parser.add_argument("--force", action="store_true", help="rebuild the CSVs even if they exist")
    parser.add_argument("--system-dir", default=str(idx.SYSTEM_DIR), help="system copy to use ('' for none; default: %(default)s)")
    parser.add_argument("--no-download", action="store_true", help="never try the official mirror")
    args = parser.parse_args(argv)
    try:
        system_dir = args.system_dir or None
        paths = prepare_data(args.data_dir, force=args.force, system_dir=system_dir, mirror="" if args.no_download else None)
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for split, path in paths.items():
        print(f"{split}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
