"""``python -m fashion_conv.research.ingredients``: what each ingredient of ``configs/strong.yaml`` is worth.

Starts from the notebook's recipe and adds the ingredients one at a time (each row keeps the ones above it),
training every row with several seeds through ``python -m fashion_conv.fit``; then trains ``mlp`` and ``cnn5``
with the notebook's and the strong recipe. Test accuracy is the official test set, measured once per run, on
the checkpoint chosen by validation accuracy. Writes ``results.csv`` and ``report.md`` to ``--out``.

Each run goes through ``fit.run``, the path of ``python -m fashion_conv.fit``, into a normal run folder under
``--runs-dir`` (default ``lightning_logs/studies/ingredients/<row>/seed<k>``), so an interrupted study resumes
where it stopped (finished runs are not trained again; a run made with other arguments is). ``--workers`` and
``--ray-address`` spread the runs (see ``fashion_conv.research.spread``). Arguments it does not know go to every
``fit`` run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import signal
import statistics
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from fashion_conv.utils.atomic import atomic_write_text
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.research import spread

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


def run_folder(row: Row, seed: int, runs_dir: Path) -> Path:
    """The run's ``--trainer.default_root_dir``; 'epochs' and 'strong' are the same training run."""
    return runs_dir / ("strong" if row.name == "epochs" else row.name) / f"seed{seed}"


def fit_args(row: Row, seed: int, root: Path, data_dir: str, extra: list[str]) -> list[str]:
    args = [*row.args, "--seed_everything", str(seed), "--data.data_dir", data_dir]
    return args + ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *extra]


def train_one(args: list[str], root: str, backbone: str, data_dir: str) -> dict:
    """One run through ``fit.run``: its metrics, and for a run tested with flip TTA also ``test_acc_no_tta``, its
    best checkpoint tested once more without TTA. (Finished runs are not called again: see ``studies.spread``.)"""
    from fashion_conv import fit

    shutil.rmtree(Path(root) / "lightning_logs", ignore_errors=True)  # a stopped run starts again as version_0
    fit.run(args)
    metrics = json.loads((Path(root) / "lightning_logs" / backbone / "version_0" / "metrics.json").read_text())
    if metrics["tta_hflip"]:
        metrics["test_acc_no_tta"] = _test_without_tta(metrics["best_checkpoint"], data_dir, metrics["precision"])
    return metrics


def _test_without_tta(checkpoint: str, data_dir: str, precision: str) -> float:
    import lightning as L

    from fashion_conv.data.datamodule import FashionMNISTDataModule
    from fashion_conv.models.classifier import FashionClassifier

    model = FashionClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True, tta_hflip=False)
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.test(model, datamodule=FashionMNISTDataModule(data_dir), verbose=False)[0]["test/acc"]


def summarise(results: list[dict], missing: list[str] = ()) -> list[dict]:
    """One line per row: mean, sd, min, max over seeds; a row with a missing run is marked, never averaged."""
    rows: dict[str, dict] = {}
    for r in results:
        rows.setdefault(r["row"], {"row": r["row"], "added": r["added"], "backbone": r["backbone"], "acc": [], "val": [], "sec": []})
        rows[r["row"]]["acc"].append(r["test_acc"])
        rows[r["row"]]["val"].append(r["val_acc"])
        rows[r["row"]]["sec"].append(r["train_seconds"])
    for s in rows.values():
        s["missing"] = [m.rpartition(" ")[2] for m in missing if m.startswith(f"{s['row']} seed ")]
        acc = s.pop("acc")
        s["seeds"] = len(acc)
        s["mean"] = statistics.mean(acc)
        s["std"] = statistics.stdev(acc) if len(acc) > 1 else 0.0
        s["min"], s["max"] = min(acc), max(acc)
        s["val"] = statistics.mean(s["val"])
        s["seconds"] = statistics.mean(s.pop("sec"))
    return list(rows.values())


def report(summary: list[dict], command: str, missing: list[str] = ()) -> str:
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
        if s["missing"]:
            lines.append(f"| {s['row']} | {s['added']} | {s['backbone']} | missing seed {', '.join(s['missing'])}: not averaged | | | | |")
            continue
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
    if missing:
        lines += ["", f"Missing runs (failed twice, see the command's output): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m fashion_conv.research.ingredients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], help="only these rows (default: all)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--runs-dir", type=Path, default=Path("lightning_logs/studies/ingredients"))
    parser.add_argument("--out", type=Path, default=Path("reports/ingredients"))
    spread.add_spread_arguments(parser)
    parser.epilog = "Any other argument goes to every fit run (e.g. --trainer.max_epochs 1 for a smoke test)."
    args, extra = parser.parse_known_args(argv)
    command = shlex.join(["python", "-m", "fashion_conv.research.ingredients", *argv])
    rows = [r for r in ROWS if not args.rows or r.name in args.rows]
    jobs = {}  # run folder -> job; the 'epochs' and 'strong' rows share one
    for row in rows:
        for seed in args.seeds:
            root = run_folder(row, seed, args.runs_dir)
            fit_argv = fit_args(row, seed, root, args.data_dir, extra)
            jobs.setdefault(root, spread.Job(f"{root.parent.name} seed {seed}", root, train_one,
                                             {"args": fit_argv, "root": str(root), "backbone": row.backbone, "data_dir": args.data_dir}))  # fmt: skip
    try:
        spread.check_spread_arguments(args)
        for job in jobs.values():
            if spread.finished(job, args.threads_per_run) is None:
                print(f"{job.name}: python -m fashion_conv.fit {shlex.join(job.kwargs['args'])}", flush=True)
        outcome = spread.run_jobs(list(jobs.values()), args.workers, args.ray_address, args.threads_per_run,
                                  lambda m: f"test acc {m['test_acc']:.4f}, val acc {m['val_acc']:.4f}, {m['train_seconds']:.0f} s")  # fmt: skip
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except spread.StudyStopped:
        print(spread.stopped_hint(command), file=sys.stderr)
        return 128 + signal.SIGTERM
    results, missing = [], []
    for row in rows:
        for seed in args.seeds:
            metrics = outcome.results.get(jobs[run_folder(row, seed, args.runs_dir)].name)
            if metrics is None:
                missing.append(f"{row.name} seed {seed}")
                continue
            test_acc = metrics["test_acc_no_tta"] if row.plain_test else metrics["test_acc"]
            results.append({"row": row.name, "added": row.added, "backbone": row.backbone, "seed": seed,
                            "test_acc": test_acc, "val_acc": metrics["val_acc"],
                            "train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"]})  # fmt: skip
    if results:
        write_results(args.out, results, report(summarise(results, missing), command, missing))
    if missing:
        print(f"error: {len(missing)} runs failed twice and are missing from the report: {', '.join(missing)}", file=sys.stderr)
        for name, error in outcome.failed.items():
            print(f"  {name}: {error.splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0


def write_results(out: Path, results: list[dict], text: str) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(results[0]))
    writer.writeheader()
    writer.writerows(results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    atomic_write_text(out / "report.md", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
