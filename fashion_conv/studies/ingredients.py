"""``python -m fashion_conv.ingredients``: what each ingredient of ``configs/strong.yaml`` is worth.

Starts from the notebook's recipe and adds the ingredients one at a time (each row keeps the ones above it),
training every row with several seeds through ``python -m fashion_conv.fit``; then trains ``mlp`` and ``cnn5``
with the notebook's and the strong recipe. Test accuracy is the official test set, measured once per run, on
the checkpoint chosen by validation accuracy. Writes ``results.csv`` and ``report.md`` to ``--out``.

Each run is a separate process whose ``metrics.json`` is kept under ``--runs-dir``, so an interrupted study
resumes where it stopped (finished runs are not trained again; use a fresh ``--runs-dir`` after changing
the arguments). Arguments it does not know go to every ``fit`` run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fashion_conv.atomic import atomic_write_text
from fashion_conv.errors import FashionConvError

STRONG = "configs/strong.yaml"


@dataclass(frozen=True)
class Row:
    name: str
    added: str  # what this row adds to the row above
    args: tuple[str, ...]  # fit arguments of the whole row (not only the added ones)
    backbone: str = "cnn"
    plain_test: bool = False  # report the run's best checkpoint tested without flip TTA


def _cumulative(steps: list[tuple[str, str, tuple[str, ...]]]) -> list[Row]:
    rows, args = [], ()
    for name, added, extra in steps:
        args = args + extra
        rows.append(Row(name, added, args))
    return rows


NOTEBOOK = ("--trainer.max_epochs", "5")  # the notebook: Adam 1e-3, batch 64, fp32, 5 epochs, no augmentation
INGREDIENTS = _cumulative(
    [
        ("notebook", "the notebook's recipe: Adam lr 1e-3, batch 64, fp32, 5 epochs", NOTEBOOK),
        ("bf16", "bf16-mixed precision, batch 128 (speed)", ("--trainer.precision", "bf16-mixed", "--data.batch_size", "128")),
        ("onecycle", "one-cycle schedule, peak lr 3e-3", ("--model.lr", "0.003", "--model.lr_schedule", "onecycle")),
        ("adamw", "AdamW, weight decay 0.05", ("--model.weight_decay", "0.05")),
        ("smoothing", "label smoothing 0.1", ("--model.label_smoothing", "0.1")),
        ("shift", "random shifts of up to 2 px", ("--data.random_shift", "2")),
        ("hflip", "random horizontal flips", ("--data.hflip", "true")),
    ]
)
# The strong recipe without its augmentation (shifts, flips, flip TTA): what augmentation is worth over 60 epochs.
NO_AUG = ("--config", STRONG, "--data.random_shift", "0", "--data.hflip", "false", "--model.tta_hflip", "false")
STRONG_ROWS = [
    Row("epochs", "60 epochs (configs/strong.yaml, tested without flip TTA)", ("--config", STRONG), plain_test=True),
    Row("strong", "flip test-time augmentation = configs/strong.yaml", ("--config", STRONG)),
    Row("noaug", "strong recipe without shifts, flips and flip TTA", NO_AUG),
]
RECIPES = (("notebook", "notebook recipe", NOTEBOOK), ("strong", "strong recipe", ("--config", STRONG)),
           ("noaug", "strong recipe without augmentation", NO_AUG))  # fmt: skip
OTHER_BACKBONES = [
    Row(f"{name}-{recipe}", f"{name}, {what}", args + ("--model.backbone", name), backbone=name)
    for name in ("mlp", "cnn5")
    for recipe, what, args in RECIPES
]
ROWS = INGREDIENTS + STRONG_ROWS + OTHER_BACKBONES


def run_one(row: Row, seed: int, runs_dir: Path, data_dir: str, fit_args: list[str]) -> dict:
    """Train one row with one seed (or read the finished run back), returning its metrics."""
    # 'epochs' and 'strong' are the same training run; 'epochs' re-tests its checkpoint without TTA.
    root = runs_dir / ("strong" if row.name == "epochs" else row.name) / f"seed{seed}"
    metrics_path = root / "lightning_logs" / row.backbone / "version_0" / "metrics.json"
    if not metrics_path.exists():
        args = [*row.args, "--seed_everything", str(seed), "--data.data_dir", data_dir]
        args += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
        args += fit_args
        print(f"[{time.strftime('%H:%M:%S')}] {row.name} seed {seed}: python -m fashion_conv.fit {' '.join(args)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "fashion_conv.fit", *args], capture_output=True, text=True)
        if done.returncode != 0 or not metrics_path.exists():
            raise FashionConvError(f"run {row.name} seed {seed} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    metrics = json.loads(metrics_path.read_text())
    if row.plain_test:
        metrics["test_acc"] = _test_without_tta(metrics["best_checkpoint"], data_dir, metrics["precision"])
    return metrics


def _test_without_tta(checkpoint: str, data_dir: str, precision: str) -> float:
    import lightning as L

    from fashion_conv.datamodule import FashionMNISTDataModule
    from fashion_conv.module import FashionClassifier

    model = FashionClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True, tta_hflip=False)
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.test(model, datamodule=FashionMNISTDataModule(data_dir), verbose=False)[0]["test/acc"]


def summarise(results: list[dict]) -> list[dict]:
    rows: dict[str, dict] = {}
    for r in results:
        rows.setdefault(r["row"], {"row": r["row"], "added": r["added"], "backbone": r["backbone"], "acc": [], "val": [], "sec": []})
        rows[r["row"]]["acc"].append(r["test_acc"])
        rows[r["row"]]["val"].append(r["val_acc"])
        rows[r["row"]]["sec"].append(r["train_seconds"])
    for s in rows.values():
        acc = s.pop("acc")
        s["seeds"] = len(acc)
        s["mean"] = statistics.mean(acc)
        s["std"] = statistics.stdev(acc) if len(acc) > 1 else 0.0
        s["min"], s["max"] = min(acc), max(acc)
        s["val"] = statistics.mean(s["val"])
        s["seconds"] = statistics.mean(s.pop("sec"))
    return list(rows.values())


def report(summary: list[dict], command: str) -> str:
    lines = [
        "# What each training ingredient is worth",
        "",
        f"Command: `{command}`",
        "",
        "Test accuracy on the official test set (10,000 images), the checkpoint chosen by validation accuracy,",
        "mean ± standard deviation over seeds; best val acc is the mean over seeds of the validation accuracy",
        "(5,000 images held out of the training set) that chose the checkpoint; time is the mean training time",
        "of one run (validation included). Each row adds its ingredient to the row above it, up to `strong`.",
        "",
        "| row | adds | backbone | test acc (mean ± sd) | min-max | best val acc | seeds | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['row']} | {s['added']} | {s['backbone']} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} % "
            f"| {100 * s['min']:.2f}-{100 * s['max']:.2f} | {100 * s['val']:.2f} % | {s['seeds']} | {s['seconds']:.0f} s |"
        )
    if any(s["row"] == "epochs" for s in summary):
        lines += [
            "",
            "The `epochs` and `strong` rows are the same training runs: `epochs` tests their best checkpoint (chosen",
            "by validation accuracy with flip TTA) once more without TTA, so its difference to `strong` is what TTA",
            "adds at test time.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_conv.ingredients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], help="only these rows (default: all)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--runs-dir", type=Path, default=Path("lightning_logs/ingredients"))
    parser.add_argument("--out", type=Path, default=Path("reports/ingredients"))
    parser.epilog = "Any other argument goes to every fit run (e.g. --trainer.max_epochs 1 for a smoke test)."
    args, fit_args = parser.parse_known_args(argv)
    rows = [r for r in ROWS if not args.rows or r.name in args.rows]
    results = []
    try:
        for row in rows:
            for seed in args.seeds:
                metrics = run_one(row, seed, args.runs_dir, args.data_dir, fit_args)
                results.append({"row": row.name, "added": row.added, "backbone": row.backbone, "seed": seed,
                                "test_acc": metrics["test_acc"], "val_acc": metrics["val_acc"],
                                "train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"]})  # fmt: skip
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(results[0]))
    writer.writeheader()
    writer.writerows(results)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.csv", buffer.getvalue())
    command = "python -m fashion_conv.ingredients " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(summarise(results), command.strip())
    atomic_write_text(args.out / "report.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
