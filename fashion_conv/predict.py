"""``python -m fashion_conv.predict``: classify images, folders of images and dataset-layout CSVs with a trained model.

    python -m fashion_conv.predict --weights lightning_logs/cnn/version_0/model.pth --backbone cnn shoe.jpg photos/
    python -m fashion_conv.predict --checkpoint lightning_logs/cnn/version_0/checkpoints/last.ckpt test.csv

Models load with ``torch.load(weights_only=True)``: a file that would run code is refused, never run.
Exit status: 0 when every input was predicted; 1 when the model or any input could not be read (the other
inputs are still predicted, each problem is one ``error:`` line on stderr); 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from fashion_conv.data.csvio import CLASS_NAMES, read_images_csv
from fashion_conv.utils.errors import DataError, FashionConvError
from fashion_conv.models.weights import add_model_arguments, checkpoint_tta, flip_tta, load_model

SIDE = 28
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
TRIM_LEVEL = 0.05 * 255  # Fashion-MNIST trimmed edges within 5% of the background's intensity


# ---- images: made to look like Fashion-MNIST ----


def open_image(path: str | Path | BinaryIO, max_pixels: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit grayscale ("L"), upright per its EXIF tag; transparent areas become white.

    ``max_pixels`` refuses a larger image before it is decoded (a small file can unpack to gigabytes). ``path`` may be
    a file object (errors then name its ``name``, or "image")."""
    where = getattr(path, "name", "image") if hasattr(path, "read") else path
    try:
        with Image.open(path) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise DataError(where, f"{img.width}x{img.height} pixels, more than the {max_pixels:,} accepted")
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                white = Image.new("RGBA", img.size, "white")  # a cut-out product photo's usual backdrop
                img = Image.alpha_composite(white, img.convert("RGBA"))
            elif img.mode.startswith(("I", "F")):  # 16-bit or float: scale to 0-255 rather than clip
                values = np.asarray(img, dtype=np.float64)
                span = values.max() - values.min()
                img = Image.fromarray(((values - values.min()) * (255 / span if span else 0)).astype(np.uint8))
            return img.convert("L")
    except DataError:
        raise
    except FileNotFoundError:
        if Path(path).is_symlink():
            raise DataError(where, f"dangling symbolic link: its target {os.readlink(path)} does not exist") from None
        raise DataError(where, "no such file") from None
    except Exception as exc:  # Pillow reports undecodable files with many exception types
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise DataError(where, f"not a readable image ({type(exc).__name__}: {detail})") from None


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def should_invert(gray: np.ndarray, invert: str = "auto") -> bool:
    """``yes``/``no``, or ``auto``: invert when most border pixels are light (a dark object on a light backdrop)."""
    if invert != "auto":
        return invert == "yes"
    return bool(np.mean(_border(gray) > 127) > 0.5)


def fit_to_square(gray: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A light object on a dark background: background to 0, trimmed, longest side scaled to ``side``, centred.

    Fashion-MNIST was made this way (trim, fit the longest edge to 28, centre, negate); (H, W) -> (side, side) uint8.
    """
    values = gray.astype(np.float32)
    background, peak = float(np.median(_border(gray))), float(values.max())
    if peak - background < TRIM_LEVEL:
        raise ValueError("no object stands out from the background")
    values = np.clip((values - background) * (255 / (peak - background)), 0, 255)  # background 0, brightest 255
    rows, cols = np.nonzero(values > TRIM_LEVEL)
    crop = values[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = crop.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # (w, h) as Pillow counts
    small = np.asarray(Image.fromarray(crop.round().astype(np.uint8)).resize(size, Image.Resampling.LANCZOS))
    canvas = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = small
    return canvas


def preprocess(image: Image.Image, invert: str = "auto") -> tuple[torch.Tensor, bool]:
    """A (1, 28, 28) float tensor in [0, 1] the way the model saw its training images, and whether it was inverted.

    A 28x28 image is taken as already in the dataset's format (only inverted, if that is asked for or detected).
    """
    gray = np.asarray(image.convert("L"))
    inverted = should_invert(gray, invert)
    if inverted:
        gray = 255 - gray
    if gray.shape != (SIDE, SIDE):
        gray = fit_to_square(gray)
    return torch.from_numpy(gray.copy()).float().div_(255).unsqueeze(0), inverted


def load_image(path: str | Path, invert: str = "auto") -> tuple[torch.Tensor, bool]:
    try:
        return preprocess(open_image(path), invert)
    except ValueError as exc:
        hint = "; try --invert yes" if invert == "no" else ("; try --invert no" if invert == "yes" else "")
        raise DataError(path, f"{exc}{hint}") from None


# ---- inputs, predictions, output ----


def expand(arg: str) -> list[Path]:
    """One command-line input as files: a folder gives its images (sorted, not recursive)."""
    path = Path(arg)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        files = [p for p in files if p.is_file() or (p.is_symlink() and not p.exists())]  # a dangling link is reported
        if not files:
            raise DataError(path, f"folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise DataError(path, "no such file or folder")
    return [path]


def read_input(path: Path, invert: str) -> tuple[torch.Tensor, np.ndarray | None, list[dict]]:
    """Images (N, 1, 28, 28) in [0, 1], labels (N,) or None, and a record per image naming where it came from."""
    if path.suffix.lower() == ".csv":
        try:
            labels, images = read_images_csv(path)
        except OSError as exc:
            raise DataError(path, f"cannot read it ({exc.strerror or type(exc).__name__})") from None
        x = torch.from_numpy(images).unsqueeze(1).float().div_(255)
        return x, labels, [{"input": str(path), "row": i + 1} for i in range(len(images))]
    x, inverted = load_image(path, invert)
    return x.unsqueeze(0), None, [{"input": str(path), "row": None, "inverted": inverted}]


@torch.inference_mode()
def predict_probabilities(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, tta_hflip: bool = False) -> torch.Tensor:
    """Softmax over the model's logits, (N, 10), in batches; with ``tta_hflip``, over the mean of the image's
    and its mirror image's logits (as ``FashionClassifier(tta_hflip=True)`` evaluates)."""

    logits = (lambda chunk: flip_tta(model, chunk)) if tta_hflip else model
    probs = torch.cat([logits(chunk).softmax(dim=1) for chunk in x.split(batch_size)])
    if probs.shape[1] != len(CLASS_NAMES):
        raise FashionConvError(f"the model gives {probs.shape[1]} outputs per image, expected {len(CLASS_NAMES)} (one per class)")
    return probs


def describe(records: list[dict], probs: torch.Tensor, labels: np.ndarray | None, top_k: int) -> list[dict]:
    """Fill each record with the true label (if known), the prediction and the top-k classes."""
    top_p, top_i = probs.topk(top_k, dim=1)
    for n, record in enumerate(records):
        record["label"] = CLASS_NAMES[int(labels[n])] if labels is not None else None
        record["prediction"] = CLASS_NAMES[int(top_i[n, 0])]
        record["probability"] = round(float(top_p[n, 0]), 4)
        record["top"] = [{"class": CLASS_NAMES[int(i)], "probability": round(float(p), 4)} for p, i in zip(top_p[n], top_i[n])]
    return records


def print_text(records: list[dict], scores: list[dict], out) -> None:
    for r in records:
        name = f"{r['input']} row {r['row']}" if r["row"] else r["input"]
        top = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"])
        label = f"; label {r['label']}" if r["label"] else ""
        print(f"{name}: {r['prediction']} ({r['probability']:.1%}); top {len(r['top'])}: {top}{label}", file=out)
    for s in scores:
        print(f"{s['input']}: accuracy {s['accuracy']:.4f} ({s['correct']} of {s['total']} rows)", file=out)


def print_csv(records: list[dict], top_k: int, out) -> None:
    writer = csv.writer(out, lineterminator="\n")
    ranks = [f"{kind}{k}" for k in range(1, top_k + 1) for kind in ("class", "probability")]
    writer.writerow(["input", "row", "label", "prediction", "probability", *ranks])
    for r in records:
        tops = [v for t in r["top"] for v in (t["class"], f"{t['probability']:.4f}")]
        writer.writerow([r["input"], r["row"] or "", r["label"] or "", r["prediction"], f"{r['probability']:.4f}", *tops])


def accuracy(path: Path, records: list[dict]) -> dict:
    correct = sum(r["prediction"] == r["label"] for r in records)
    return {"input": str(path), "correct": correct, "total": len(records), "accuracy": round(correct / len(records), 4)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_conv.predict",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="Images are made to look like Fashion-MNIST: grayscale, light object on black (see --invert), "
        "background trimmed, longest side fitted to 28 px keeping the aspect ratio, centred. A 28x28 image is used as is. "
        "A folder gives its image files, not recursively. "
        "A CSV is 'label,pixel1,...,pixel784' (accuracy is reported) or 'pixel1,...,pixel784'.",
    )
    add_model_arguments(parser)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, CSV files")
    parser.add_argument(
        "--top-k", type=int, default=3, choices=range(1, len(CLASS_NAMES) + 1), metavar="K", help="classes to list per image (1-10, default 3)"
    )
    parser.add_argument("--format", choices=("text", "json", "csv"), default="text", help="output on stdout (default text)")
    parser.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="images only: make a dark object on a light background light on dark, as in Fashion-MNIST; "
        "auto (default) inverts when most border pixels are light, as in product photos",
    )
    parser.add_argument(
        "--tta-hflip",
        choices=("auto", "yes", "no"),
        default="auto",
        help="average each image's and its mirror image's logits; auto (default): as the checkpoint was "
        "evaluated (--model.tta_hflip, e.g. configs/strong.yaml), no for --weights",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return predict(argv)
    except BrokenPipeError:  # the reader stopped early (``| head``): not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout again at exit; let that go nowhere
        return 128 + 13  # killed by SIGPIPE, as a C tool would report it


def predict(argv: list[str] | None = None) -> int:
    """``main`` without the broken-pipe handling."""
    args = build_parser().parse_args(argv)
    try:
        model = load_model(args.checkpoint, args.weights, args.backbone)
        tta = checkpoint_tta(args.checkpoint) if args.tta_hflip == "auto" else args.tta_hflip == "yes"
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    records, scores, failed = [], [], False
    for arg in args.inputs:
        try:
            paths = expand(arg)
        except FashionConvError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        for path in paths:
            try:
                x, labels, found = read_input(path, args.invert)
                found = describe(found, predict_probabilities(model, x, tta_hflip=tta), labels, args.top_k)
            except FashionConvError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed = True
                continue
            records += found
            if labels is not None:
                scores.append(accuracy(path, found))
    if args.format == "json":
        json.dump({"predictions": records, "accuracy": scores}, sys.stdout, indent=1)
        print()
    elif args.format == "csv":
        print_csv(records, args.top_k, sys.stdout)
        print_text([], scores, sys.stderr)  # keeps stdout a clean table
    else:
        print_text(records, scores, sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
