"""``python -m fashion_conv.prepare``: build ``data/processed/fashion-mnist-{train,test}.csv`` from the official
Fashion-MNIST IDX files (a local copy, Debian's ``dataset-fashion-mnist``, or the official mirror)."""

from __future__ import annotations

import argparse
import sys

from fashion_conv.data import idx
from fashion_conv.data.files import prepare_data
from fashion_conv.utils.errors import FashionConvError


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
