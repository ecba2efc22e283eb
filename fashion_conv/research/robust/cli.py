"""``python -m fashion_conv.research.robust``: corruptions, adversarial attacks and calibration of trained models, as a report.

    python -m fashion_conv.research.robust --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt --out reports/robust
    python -m fashion_conv.research.robust --weights mlp.pth --backbone mlp --weights cnn.pth --backbone cnn --out cmp

Models with the same --label are seeds of one recipe (mean ± std); the default label is the backbone's name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from fashion_conv.data.datamodule import FashionMNISTDataModule
from fashion_conv.models.weights import checkpoint_tta
from fashion_conv.research.explain.load import load_trained
from fashion_conv.research.robust.evaluate import Data, Measured, measure
from fashion_conv.research.robust.report import write_report
from fashion_conv.research.robust.scores import FlipTTA
from fashion_conv.utils.atomic import atomic_write_text
from fashion_conv.utils.errors import ArgumentValueError, FashionConvError

PROG = "python -m fashion_conv.research.robust"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("--checkpoint", action="append", default=[], metavar="X.ckpt", help="a Lightning checkpoint of fashion_conv.fit (repeatable)")
    p.add_argument("--weights", action="append", default=[], metavar="model.pth", help="a backbone state dict, with --backbone (repeatable)")
    p.add_argument("--backbone", action="append", default=[], metavar="NAME", help="the backbone of each --weights, in order")
    p.add_argument("--label", action="append", default=[], help="a group name per model, in order (checkpoints first); equal labels are seeds of one recipe")
    p.add_argument("--out", type=Path, help="(required) folder for report.md, PNGs and CSVs (created; files in it are replaced)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="the data folder holding processed/*.csv (default: data)")
    p.add_argument("--val-size", type=int, default=5000, help="validation images of the runs (their --data.val_size; default: 5000)")
    p.add_argument("--split-seed", type=int, default=0, help="the runs' --data.split_seed (default: 0): T is fitted on their validation split")
    p.add_argument("--baseline", default="mlp", help="the group that corruption errors are relative to (default: mlp)")
    p.add_argument("--corrupt-images", type=int, default=2000, help="first N test images for the corruptions (default: 2000)")
    p.add_argument("--attack-images", type=int, default=300, help="first N test images for FGSM and PGD (default: 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions and of PGD's random start (default: 0)")
    p.add_argument("--cache", type=Path, help="keep each model's measurements here (keyed by its file's bytes and these "
                   "settings), so a later report with more models measures only the new ones")
    return p


def load_models(args: argparse.Namespace) -> tuple[list[Measured], list[tuple[str, str]]]:
    """Each model (a checkpoint run with flip TTA is evaluated with it, as fit tested it), and same-backbone group pairs."""
    if not args.checkpoint and not args.weights:
        raise FashionConvError("give a model: --checkpoint X.ckpt, or --weights model.pth with --backbone NAME")
    if len(args.backbone) != len(args.weights):
        raise FashionConvError(f"each --weights needs its --backbone NAME, in order: got {len(args.weights)} --weights and {len(args.backbone)} --backbone")
    found = []
    for c in args.checkpoint:
        model, name = load_trained(checkpoint=c)
        found.append((FlipTTA(model) if checkpoint_tta(c) else model, name, str(c)))
    found += [(*load_trained(weights=w, backbone=b), str(w)) for w, b in zip(args.weights, args.backbone)]
    if args.label and len(args.label) != len(found):
        raise FashionConvError(f"--label: {len(args.label)} given for {len(found)} models")
    labels = args.label or [name for _, name, _ in found]
    models = [Measured(label, model.eval(), source) for label, (model, _, source) in zip(labels, found)]
    backbone = {}
    for label, (_, name, _) in zip(labels, found):
        backbone.setdefault(label, name)
    groups = list(backbone)
    pairs = [(a, b) for i, a in enumerate(groups) for b in groups[:i] if backbone[a] == backbone[b]]
    return models, pairs


def load_data(args: argparse.Namespace) -> Data:
    """The datamodule's validation split (T is fitted there) and the official test set, float in [0, 1]."""
    dm = FashionMNISTDataModule(data_dir=args.data_dir, download=False, val_size=args.val_size, split_seed=args.split_seed)
    try:
        dm.setup(None)
    except FileNotFoundError as exc:
        raise FashionConvError(f"{exc.filename}: no such file; run python -m fashion_conv.prepare (or give --data-dir)") from None
    as_float = lambda s: (s.images.float().div(255), s.labels)  # noqa: E731
    test, val = as_float(dm.test_set), as_float(dm.val_set)
    for name, n in (("--corrupt-images", args.corrupt_images), ("--attack-images", args.attack_images)):
        if not 1 <= n <= len(test[1]):
            raise FashionConvError(f"{name} must be 1..{len(test[1])}, got {n}")
    return Data(test, val, args.corrupt_images, args.attack_images, args.seed)


FIELDS = ("corruption", "adversarial", "calibration", "reliability", "temperature", "clean_accuracy", "attack_clean_accuracy", "seconds")


def cache_path(m: Measured, cache: Path, data: Data) -> Path:
    """One JSON per model file's contents and measurement settings."""
    settings = f"{data.n_corrupt},{data.n_adv},{data.seed},{type(m.model).__name__}".encode()
    split = data.val[1].numpy().tobytes()  # the validation labels in split order: another split, another key
    digest = hashlib.sha256(Path(m.source).read_bytes() + settings + split).hexdigest()[:20]
    return cache / f"{digest}.json"


def load_measured(m: Measured, cache: Path, data: Data) -> bool:
    path = cache_path(m, cache, data)
    if not path.is_file():
        return False
    saved = json.loads(path.read_text())
    for name in FIELDS:
        setattr(m, name, saved[name])
    print(f"{m.group} ({m.source}): measurements from {path}", flush=True)
    return True


def save_measured(m: Measured, cache: Path, data: Data) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_path(m, cache, data), json.dumps({name: getattr(m, name) for name in FIELDS}))


def header(started: float) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    import kornia
    import art

    return [f"Run on {datetime.now(timezone.utc):%Y-%m-%d} (UTC), CPU: {cpu}, {torch.get_num_threads()} CPU thread(s); "
            f"torch {torch.__version__}, kornia {kornia.__version__}, adversarial-robustness-toolbox {art.__version__}, "
            f"Python {platform.python_version()}. Whole report: {(time.perf_counter() - started) / 60:.1f} min."]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            raise argparse.ArgumentError(None, f"unrecognized arguments: {' '.join(extra)}")
        if args.out is None:  # checked here: argparse exits on a missing required option even with exit_on_error=False
            raise argparse.ArgumentError(None, "--out DIR is required")
        models, pairs = load_models(args)
        data = load_data(args)
        todo = [m for m in models if not (args.cache and load_measured(m, args.cache, data))]
        if todo:
            measure(todo, data, progress=lambda s: print(s, flush=True))
        if args.cache:
            for m in todo:
                save_measured(m, args.cache, data)
        command = f"{PROG} {shlex.join(argv)}"
        cached = len(models) - len(todo)
        note = [f"Measurements of {cached} of the {len(models)} models were read from --cache (measured by an earlier run with "
                "the same settings; their seconds are in the Time section)."] if cached else []
        report = write_report(models, data, args.out, command, header(started) + note, args.baseline, pairs)
    except argparse.ArgumentError as exc:
        print(f"error: {exc} (see {PROG} --help)", file=sys.stderr)
        return 2
    except ArgumentValueError as exc:  # the data module names its argument (val_size); this command's flag is --val-size
        print(f"error: {exc.under('--' + exc.argument.replace('_', '-'))}", file=sys.stderr)
        return 1
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
