"""A run folder's bookkeeping: its ``version_N`` name, checking a checkpoint before a resume, and what a finished
run writes (``metrics.json``, ``model.pth``, TensorBoard's HPARAMS entry) and prints."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fashion_conv.callbacks.checkpoints import GracefulStop
from fashion_conv.callbacks.dashboards import log_hparams
from fashion_conv.models.classifier import FashionClassifier
from fashion_conv.models.weights import checkpoint_backbone, read_weights_file
from fashion_conv.utils.atomic import atomic_path, atomic_write_text
from fashion_conv.utils.errors import FashionConvError


def run_name(backbone: str) -> str:
    """Folder name of a run group: the registry name, or the class name of a class path."""
    return backbone.rpartition(".")[2]


def find_last_checkpoint(runs_dir: Path) -> Path | None:
    """The newest ``version_*/checkpoints/last.ckpt`` under a backbone's run folder."""
    found = sorted(runs_dir.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def reserve_version(runs_dir: Path) -> str:
    """Create the next free ``version_N`` folder and return its name. ``mkdir`` fails if the folder exists, so two
    runs started together never share one (Lightning's own choice, the next number it sees, races)."""
    if os.environ.get(_VERSION_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        return os.environ[_VERSION_ENV]  # a DDP worker process: the folder rank 0 reserved
    runs_dir.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in runs_dir.glob("version_*") if p.name[8:].isdigit()]
    for n in itertools.count(max(taken, default=-1) + 1):
        try:
            (runs_dir / f"version_{n}").mkdir()
        except FileExistsError:
            continue  # another run made it after the listing
        os.environ[_VERSION_ENV] = f"version_{n}"  # inherited by DDP worker processes, which Lightning starts later
        return f"version_{n}"


_VERSION_ENV = "FASHION_CONV_RUN_VERSION"

# Settings a resumed run must share with its checkpoint: changing them mid-run would train something the record
# does not describe (Adam's restored state keeps the old rate; the mid-epoch position counts batches).
MODEL_FIXED = ("backbone", "backbone_kwargs", "lr", "num_classes", "weight_decay", "label_smoothing", "lr_schedule", "tta_hflip")
DATA_FIXED = (
    "batch_size", "val_size", "split_seed", "shuffle_seed", "train_size", "random_shift", "hflip", "random_erasing",
    "pixel_permutation_seed",
)  # fmt: skip


def check_resume(path: Path, config) -> None:
    """Refuse, naming every difference, a checkpoint that is not this run's to continue: not a training checkpoint,
    another backbone, or other settings. Reads the file only (``weights_only=True``); nothing is written."""
    ckpt = read_weights_file(path)
    if "state_dict" not in ckpt or "loops" not in ckpt:
        kind = "a model.pth (weights only)" if "state_dict" not in ckpt else "not a training checkpoint"
        raise FashionConvError(f"{path}: is {kind}; --ckpt_path needs a training checkpoint such as <run>/checkpoints/last.ckpt")
    requested = backbone_name(config.model)
    held = (ckpt.get("hyper_parameters") or {}).get("backbone")
    if isinstance(held, str) and held != requested:
        raise FashionConvError(f"{path}: holds a {held!r} backbone, but --model.backbone is {requested!r}")
    checkpoint_backbone(ckpt, path, trusted=requested)
    hp, data_hp = ckpt["hyper_parameters"], ckpt.get("datamodule_hyper_parameters") or {}
    asked = {f"model.{k}": getattr(config.model, k) for k in MODEL_FIXED}
    asked.update({f"data.{k}": getattr(config.data, k) for k in DATA_FIXED})
    asked["model.backbone"] = backbone_name(config.model)
    asked["model.backbone_kwargs"] = asked["model.backbone_kwargs"] or {}
    had = {f"model.{k}": hp.get(k) for k in MODEL_FIXED} | {f"data.{k}": data_hp.get(k, asked[f"data.{k}"]) for k in DATA_FIXED}
    saved = _saved_config(path)
    if saved:  # the run folder's config.yaml: the seed drives the shuffle; a schedule is laid out for max_epochs
        asked["seed_everything"], had["seed_everything"] = config.seed_everything, saved.get("seed_everything")
        if hp.get("lr_schedule", "none") != "none":
            asked["trainer.max_epochs"] = config.trainer.max_epochs
            had["trainer.max_epochs"] = (saved.get("trainer") or {}).get("max_epochs")
    had["model.backbone_kwargs"] = had["model.backbone_kwargs"] or {}
    differ = [f"--{k} {_plain(had[k])!r} (now {_plain(asked[k])!r})" for k in asked if _plain(had[k]) != _plain(asked[k])]
    if differ:
        raise FashionConvError(
            f"{path}: was trained with {', '.join(differ)}; a resumed run keeps its settings, so drop the changed "
            "options, or start a fresh run without --ckpt_path"
        )


def _plain(value: Any) -> Any:
    """Compare settings as config.yaml writes them: tuples as lists, no kwargs as {}."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _saved_config(ckpt_path: Path) -> dict:
    """``config.yaml`` of the run folder holding ``<run>/checkpoints/<ckpt>``, or {} if there is none."""
    config = ckpt_path.parent.parent / "config.yaml"
    try:
        return yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def backbone_name(model_config) -> str:
    backbone = model_config.backbone
    if isinstance(backbone, str):
        return backbone
    return getattr(backbone, "class_path", None) or backbone["class_path"]


def train_and_test(trainer: Trainer, model: LightningModule, data: LightningDataModule, ckpt_path: Path | None, seed: Any) -> dict:
    """Fit, test the best checkpoint on the official test set, write ``metrics.json`` and ``model.pth``.

    A stop request (SIGTERM, SIGINT) raises ``SIGTERMException`` and writes neither: a partial run is never reported.
    """
    start = time.perf_counter()
    stop = graceful_stop(trainer)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    # The run's total over every resume (kept in the checkpoint), not this process's few seconds of a re-test.
    train_seconds = stop.train_seconds() if stop else time.perf_counter() - start
    if stop and stop.requested:  # it came during the last validation: last.ckpt holds the finished epoch
        raise SIGTERMException
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    tested = trainer.test(
        model, datamodule=data, ckpt_path=best or None, weights_only=True,
        verbose=False,
    )[0]  # fmt: skip
    if stop and stop.requested:
        raise SIGTERMException
    summary = {
        "backbone": model.hparams.backbone,
        "params": model.num_params,
        "epochs": trainer.current_epoch,
        "val_acc": float(checkpoint.best_model_score) if best and checkpoint.best_model_score is not None else None,
        "test_acc": tested["test/acc"],
        "test_loss": tested["test/loss"],
        "tta_hflip": bool(model.hparams.tta_hflip),  # val_acc and test_acc averaged over mirror images
        "train_seconds": round(train_seconds, 2),
        "seed": seed,
        "precision": str(trainer.precision),
        "accelerator": type(trainer.accelerator).__name__,
        "run_dir": None if trainer.fast_dev_run else str(trainer.log_dir or trainer.default_root_dir),
        "best_checkpoint": best,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
    }
    if trainer.is_global_zero and summary["run_dir"] is not None:  # fast_dev_run: a check for bugs, no outputs
        _write_outputs(trainer, model, summary)
    return summary


def graceful_stop(trainer: Trainer) -> GracefulStop | None:
    return next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)


# The recipe's settings, as columns of TensorBoard's HPARAMS tab (the full configuration is in config.yaml).
RECIPE_MODEL_HPARAMS = ("lr", "lr_schedule", "weight_decay", "label_smoothing", "tta_hflip")
RECIPE_DATA_HPARAMS = ("batch_size", "random_shift", "hflip", "random_erasing")


def _write_outputs(trainer: Trainer, model: FashionClassifier, summary: dict) -> None:
    run_dir = Path(summary["run_dir"])
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    with atomic_path(run_dir / "model.pth") as tmp:
        torch.save({k: v.cpu() for k, v in model.backbone.state_dict().items()}, tmp)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.close()  # Lightning closed it after test already: no event file is rewritten mid-write
            drop_earlier_hparams(Path(logger.log_dir))  # a resumed run's earlier finishes
            hp = {k: v for k, v in summary.items() if k in ("backbone", "params", "seed", "precision", "epochs")}
            hp.update({k: model.hparams[k] for k in RECIPE_MODEL_HPARAMS if k in model.hparams})
            data_hp = trainer.datamodule.hparams
            hp.update({k: data_hp[k] for k in RECIPE_DATA_HPARAMS if k in data_hp})
            metrics = {"hp/val_acc": summary["val_acc"], "hp/test_acc": summary["test_acc"]}
            metrics = {k: v for k, v in metrics.items() if v is not None}  # a run without validation has no hp/val_acc
            log_hparams(logger.log_dir, hp, metrics, trainer.global_step, trial_id=f"{run_dir.parent.name}/{run_dir.name}")


def remove_if_unused(run_dir: Path) -> None:
    """Remove a reserved run folder that holds nothing of a run: Lightning opens the event file before the data's
    set-up can fail, so an event file with no summary in it does not count."""
    for events in run_dir.glob("events.out.tfevents.*"):
        if _holds_nothing_logged(events):
            events.unlink()
    try:
        run_dir.rmdir()
    except OSError:
        pass  # not empty: it holds this run's checkpoints or logs


def _holds_nothing_logged(events: Path) -> bool:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return all(not event.HasField("summary") for event in EventFileLoader(str(events)).Load())


def drop_earlier_hparams(run_dir: Path) -> None:
    """Remove the HPARAMS entries that earlier processes of this run wrote (a finished run resumed for more epochs).

    TensorBoard shows the first ``_hparams_/session_start_info`` of a run folder and ignores later ones, so the
    run's totals (epochs) would stay those of its first finish. Other events are copied byte for byte, atomically.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    for events in run_dir.glob("events.out.tfevents.*"):
        records = list(RawEventFileLoader(str(events)).Load())
        keep = [r for r in records if not any(v.tag.startswith("_hparams_/") for v in Event.FromString(r).summary.value)]
        if len(keep) < len(records):
            with atomic_path(events) as tmp, open(tmp, "wb") as f:
                writer = RecordWriter(f)
                for record in keep:
                    writer.write(record)


def print_summary(summary: dict) -> None:  # pragma: no mutate block (a layout for people; tests check its lines)
    val = f"{summary['val_acc']:.4f}" if summary["val_acc"] is not None else "n/a"
    tta = ", flip TTA" if summary.get("tta_hflip") else ""
    tested = "best checkpoint by val/acc" if summary.get("best_checkpoint") else "last weights: no validation"
    lines = [
        "",
        "fashion_conv run summary",
        f"  backbone        {summary['backbone']} ({summary['params']:,} parameters)",
        f"  epochs          {summary['epochs']}  (seed {summary['seed']}, precision {summary['precision']})",
        f"  best val acc    {val}",
        f"  test acc        {summary['test_acc']:.4f}  (official test set, {tested}{tta})",
        f"  training time   {summary['train_seconds']:.1f} s",
        f"  run folder      {summary['run_dir']}  (metrics.json, model.pth, checkpoints/)"
        if summary["run_dir"] else "  run folder      none: fast_dev_run writes no files",
        "  dashboards      tensorboard --logdir lightning_logs",
    ]
    print("\n".join(lines))
