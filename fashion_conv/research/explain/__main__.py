"""``python -m fashion_conv.research.explain``: what trained backbones learned, as a Markdown report with figures and CSVs.

    python -m fashion_conv.research.explain --checkpoint lightning_logs/cnn/version_0/checkpoints/last.ckpt --out reports/explain
    python -m fashion_conv.research.explain --weights mlp.pth --backbone mlp --weights cnn.pth --backbone cnn --out cmp

Several models (repeat --checkpoint, or --weights with its --backbone) are shown side by side.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from fashion_conv.data.csvio import read_csv
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.research.explain.load import load_trained
from fashion_conv.research.explain.report import Explained, write_report
from fashion_conv.data.files import csv_paths

PROG = "python -m fashion_conv.research.explain"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("--checkpoint", action="append", default=[], metavar="X.ckpt", help="a Lightning checkpoint of fashion_conv.fit (repeatable)")
    p.add_argument("--weights", action="append", default=[], metavar="model.pth", help="a backbone state dict, with --backbone (repeatable)")
    p.add_argument("--backbone", action="append", default=[], metavar="NAME", help="the backbone of each --weights, in order: mlp, cnn, cnn5, convnet or a class path")
    p.add_argument("--label", action="append", default=[], help="a name per model in the report, in order (checkpoints first); default: the backbone's name")
    p.add_argument("--out", type=Path, required=True, help="folder for report.md, PNGs and CSVs (created; files in it are replaced)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="the data folder holding processed/fashion-mnist-test.csv (default: data)")
    p.add_argument("--equivariance-images", type=int, default=1000, help="test images for the equivariance measurement (default: 1000)")
    p.add_argument("--errors-per-class", type=int, default=3, help="most confident mistakes listed per class (default: 3)")
    p.add_argument("--steps", type=int, default=256, help="Integrated Gradients steps (default: 256; its delta is in the report)")
    return p


def load_models(args: argparse.Namespace) -> list[Explained]:
    if not args.checkpoint and not args.weights:
        raise FashionConvError("give a model: --checkpoint X.ckpt, or --weights model.pth with --backbone NAME")
    if len(args.backbone) != len(args.weights):
        raise FashionConvError(f"each --weights needs its --backbone NAME, in order: got {len(args.weights)} --weights and {len(args.backbone)} --backbone")
    found = [(*load_trained(checkpoint=c), str(c)) for c in args.checkpoint]
    found += [(*load_trained(weights=w, backbone=b), str(w)) for w, b in zip(args.weights, args.backbone)]
    if args.label and len(args.label) != len(found):
        raise FashionConvError(f"--label: {len(args.label)} given for {len(found)} models")
    labels = args.label or [name for _, name, _ in found]
    labels = [f"{lab}-{labels[:i].count(lab) + 1}" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels)]
    return [Explained(label, model, source) for label, (model, _, source) in zip(labels, found)]


def load_test_images(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The official test set: images (N, 1, 28, 28) float in [0, 1] and labels (N,) int64."""
    path = csv_paths(data_dir)["test"]
    if not path.is_file():
        raise FashionConvError(f"{path}: no such file; run python -m fashion_conv.prepare (or give --data-dir)")
    labels, images = read_csv(path)
    return torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255), torch.from_numpy(labels).long()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            raise argparse.ArgumentError(None, f"unrecognized arguments: {' '.join(extra)}")
        for name in ("equivariance_images", "errors_per_class", "steps"):
            if getattr(args, name) < 1:
                raise FashionConvError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
        models = load_models(args)
        images, labels = load_test_images(args.data_dir)
        command = f"{PROG} {shlex.join(argv)}"
        report = write_report(models, images, labels, args.out, command, args.equivariance_images, args.errors_per_class, args.steps)
    except argparse.ArgumentError as exc:
        print(f"error: {exc} (see {PROG} --help)", file=sys.stderr)
        return 2
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
