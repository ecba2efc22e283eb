"""``python -m fashion_conv.fit``: prepare data, train, test the best checkpoint, export ``model.pth``.

A LightningCLI, so ``--model.*``, ``--data.*``, ``--trainer.*``, ``--config`` and ``--print_config`` work
as in any Lightning project. Defaults reproduce the notebook: ``cnn``, 5 epochs, batch 64, Adam 1e-3.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from fashion_conv.utils import quiet
from fashion_conv.utils.atomic import WriteError, atomic_path, atomic_write_text
from fashion_conv.models.weights import checkpoint_backbone, read_weights_file
from fashion_conv.callbacks.checkpoints import AtomicCheckpointIO, BestCheckpoint, GracefulStop
from fashion_conv.callbacks.dashboards import DatasetDashboards, log_hparams
from fashion_conv.data.datamodule import FashionMNISTDataModule
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.utils.memory import keep_freed_memory
from fashion_conv.research.explain.callback import ExplainFigures
from fashion_conv.models.classifier import FashionClassifier, steps_per_call_conflicts
from fashion_conv.progress import StepProgressBar

SEED = 42
PROGRESS_REFRESH_STEPS = 25
# Batches per training_step call where the trainer settings allow (--data.steps_per_call): Lightning's fixed cost a
# call, about 0.8 ms on CPU, is then paid once per 16 batches of 64. At most 16 batches (mlp: groups of 32 were no
# faster) and about 2,048 images (a bf16 cnn epoch in batches of 256: 4.4-4.9 s in groups of 8, 5.0-5.3 in groups of
# 4 or 16; see the README's speed section).
MAX_STEPS_PER_CALL, IMAGES_PER_CALL = 16, 2048


def default_steps_per_call(batch_size: int) -> int:
    """Batches a call when the user leaves it to fit: 16 batches of 64 or 128, 8 of 256, 1 from 2,048 images up."""
    # (A batch size below 1 is refused by the DataModule; max(batch_size, 2) would give the same 16 for 1.)
    return max(1, min(MAX_STEPS_PER_CALL, IMAGES_PER_CALL // max(batch_size, 1)))  # pragma: no mutate: equivalent, see above


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
    "pixel_permutation_seed", "steps_per_call",
)  # fmt: skip


def check_resume(path: Path, config) -> None:
    """Refuse, naming every difference, a checkpoint that is not this run's to continue: not a training checkpoint,
    another backbone, or other settings. Reads the file only (``weights_only=True``); nothing is written."""
    ckpt = read_weights_file(path)
    if "state_dict" not in ckpt or "loops" not in ckpt:
        kind = "a model.pth (weights only)" if "state_dict" not in ckpt else "not a training checkpoint"
        raise FashionConvError(f"{path}: is {kind}; --ckpt_path needs a training checkpoint such as <run>/checkpoints/last.ckpt")
    requested = _backbone_name(config.model)
    held = (ckpt.get("hyper_parameters") or {}).get("backbone")
    if isinstance(held, str) and held != requested:
        raise FashionConvError(f"{path}: holds a {held!r} backbone, but --model.backbone is {requested!r}")
    checkpoint_backbone(ckpt, path, trusted=requested)
    hp, data_hp = ckpt["hyper_parameters"], ckpt.get("datamodule_hyper_parameters") or {}
    asked = {f"model.{k}": getattr(config.model, k) for k in MODEL_FIXED}
    asked.update({f"data.{k}": getattr(config.data, k) for k in DATA_FIXED})
    asked["model.backbone"] = _backbone_name(config.model)
    asked["model.backbone_kwargs"] = asked["model.backbone_kwargs"] or {}
    had = {f"model.{k}": hp.get(k) for k in MODEL_FIXED} | {f"data.{k}": data_hp.get(k, asked[f"data.{k}"]) for k in DATA_FIXED}
    had["data.steps_per_call"] = data_hp.get("steps_per_call") or 1  # checkpoints from before it existed: 1
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


class FashionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=Optional[str],  # pragma: no mutate: equivalent, untyped, a command-line value is text too
            default=None,
            help="Resume from this checkpoint; 'last' resumes the newest run of this backbone (or starts fresh).",
        )
        parser.add_argument(
            "--explain_figures",
            type=bool,
            default=True,
            help="At the end of fit, show the model's filters, feature maps and attributions in TensorBoard (IMAGES).",
        )
        # None: resolved in before_instantiate_classes (default_steps_per_call where the trainer settings allow, else 1).
        parser.set_defaults({"data.steps_per_call": None})

    def before_instantiate_classes(self) -> None:
        config = self.config
        root = Path(config.trainer.default_root_dir or ".")
        self.runs_dir = root / "lightning_logs" / run_name(_backbone_name(config.model))
        self.resume_from, self.version = None, None
        ckpt = config.ckpt_path
        if ckpt == "last":
            self.resume_from = find_last_checkpoint(self.runs_dir)
            if self.resume_from is None:
                print(f"No checkpoint under {self.runs_dir} yet: starting a fresh run.", file=sys.stderr)
            else:  # continue in the same run folder, so TensorBoard shows one continuous run
                self.version = self.resume_from.parent.parent.name
        elif ckpt:
            self.resume_from = Path(ckpt)
        resolve_steps_per_call(config, self.resume_from)
        if config.data.steps_per_call > 1:
            quiet.grouped_calls()
        if self.resume_from is not None:  # checked before anything is written: a bad file never touches a run folder
            check_resume(self.resume_from, config)
            quiet.resuming()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        if self.config.trainer.logger in (None, True):  # the default: one TensorBoard folder per backbone
            if self.version is None:
                self.version = reserve_version(self.runs_dir)
                self.reserved = self.runs_dir / self.version
            kwargs["logger"] = TensorBoardLogger(
                save_dir=self.runs_dir.parent, name=self.runs_dir.name, version=self.version, default_hp_metric=False
            )
        if self.config.trainer.plugins is None:  # a kill mid-save must not leave a truncated checkpoint
            kwargs["plugins"] = [AtomicCheckpointIO()]
        callbacks = self._get(self.config_init, "trainer").get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if self.config.trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Lightning's bar redraws every step, which costs as much as an MLP step on CPU.
            kwargs["callbacks"] = [*callbacks, StepProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS)]
        if self.config.trainer.profiler is None:
            kwargs["profiler"] = NoProfiler()
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.callbacks:
            if isinstance(callback, ExplainFigures):
                callback.enabled = self.config.explain_figures
        return trainer


def resolve_steps_per_call(config, resume_from: Path | None) -> None:
    """Set ``--data.steps_per_call`` when the user left it to fit (None): a resumed run keeps its checkpoint's value;
    a new one takes default_steps_per_call(batch_size) unless a trainer setting counts single batches. A value given explicitly with such
    a setting is refused, naming it."""
    data = config.data
    trainer = vars(config.trainer)
    conflicts = steps_per_call_conflicts(trainer)
    if data.steps_per_call is None:
        if resume_from is not None:
            held = (read_weights_file(resume_from).get("datamodule_hyper_parameters") or {}).get("steps_per_call")
            data.steps_per_call = held or 1
        else:
            data.steps_per_call = 1 if conflicts else default_steps_per_call(data.batch_size)
    elif data.steps_per_call > 1 and conflicts:
        raise FashionConvError(
            f"--data.steps_per_call {data.steps_per_call} cannot run with --trainer.{', --trainer.'.join(conflicts)}: "
            "they count single batches; leave --data.steps_per_call out, or set it to 1"
        )


class NoProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler, without a generator context manager around each of its ~60 hook calls
    a step (about 40 us a step on CPU, 3 % of an MLP step); ``--trainer.profiler simple`` etc. still work."""

    _null = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._null


def _backbone_name(model_config) -> str:
    backbone = model_config.backbone
    if isinstance(backbone, str):
        return backbone
    return getattr(backbone, "class_path", None) or backbone["class_path"]


def build_cli(argv: list[str] | dict | None, callbacks: Sequence[Callback] = ()) -> FashionCLI:
    """The ``fit`` command line from ``argv`` (a list of arguments or a config dict); ``callbacks`` join the defaults."""
    quiet.install()
    keep_freed_memory()  # this process trains: no fresh pages for every step's large buffers (fashion_conv.utils.memory)
    return FashionCLI(
        FashionClassifier,
        FashionMNISTDataModule,
        run=False,  # pragma: no mutate: equivalent, None is as False
        args=argv,
        seed_everything_default=SEED,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "max_epochs": 5,
            "callbacks": [
                # First (trainer.checkpoint_callback): the best epoch by validation accuracy, tested at the end;
                # also copied to checkpoints/best.ckpt, a name the README's commands can use.
                BestCheckpoint(
                    monitor="val/acc", mode="max", filename="best-epoch={epoch}-val_acc={val/acc:.4f}",
                    auto_insert_metric_name=False,  # pragma: no mutate: equivalent, None is as False
                ),
                # checkpoints/last.ckpt after every epoch, for --ckpt_path last. (Lightning 2.6's save_last=True
                # skips epochs that did not improve the monitored metric.)
                ModelCheckpoint(filename="last", enable_version_counter=False),
                DatasetDashboards(),
                ExplainFigures(),
                GracefulStop(),
                *callbacks,
            ],
        },
        parser_kwargs={"prog": "python -m fashion_conv.fit", "description": __doc__.splitlines()[0], "exit_on_error": False},
    )


def run(argv: list[str] | dict | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    """One training run, the one path of ``fit`` and of every study run: build the CLI from ``argv`` (arguments or
    a config dict), fit, test the best checkpoint, write the run folder; returns the summary (``metrics.json``)."""
    return run_cli(build_cli(argv, callbacks))


def run_cli(cli: FashionCLI) -> dict:
    """``train_and_test`` for a built CLI, with SIGTERM and SIGINT caught from data set-up to the last file written."""
    stop = graceful_stop(cli.trainer)
    catching = stop is not None and stop.catch_signals(cli.trainer)
    try:
        return train_and_test(cli.trainer, cli.model, cli.datamodule, cli.resume_from, cli.config.seed_everything)
    finally:
        if catching:
            stop.restore_signals()


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
        verbose=False,  # pragma: no mutate: equivalent, None is as False
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
        "run_dir": str(trainer.log_dir) if trainer.log_dir else None,
        "best_checkpoint": best,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
    }
    if trainer.is_global_zero:
        _write_outputs(trainer, model, summary)
    return summary


def graceful_stop(trainer: Trainer) -> GracefulStop | None:
    return next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)


# The recipe's settings, as columns of TensorBoard's HPARAMS tab (the full configuration is in config.yaml).
RECIPE_MODEL_HPARAMS = ("lr", "lr_schedule", "weight_decay", "label_smoothing", "tta_hflip")
RECIPE_DATA_HPARAMS = ("batch_size", "random_shift", "hflip", "random_erasing")


def _write_outputs(trainer: Trainer, model: FashionClassifier, summary: dict) -> None:
    run_dir = Path(summary["run_dir"] or trainer.default_root_dir)  # trainer.log_dir is collective under DDP
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    with atomic_path(run_dir / "model.pth") as tmp:
        torch.save({k: v.cpu() for k, v in model.backbone.state_dict().items()}, tmp)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.close()  # Lightning closed it after test already: no event file is rewritten mid-write
            drop_earlier_hparams(Path(logger.log_dir))
            hp = {k: v for k, v in summary.items() if k in ("backbone", "params", "seed", "precision", "epochs")}
            hp.update({k: model.hparams[k] for k in RECIPE_MODEL_HPARAMS if k in model.hparams})
            data_hp = trainer.datamodule.hparams
            hp.update({k: data_hp[k] for k in RECIPE_DATA_HPARAMS if k in data_hp})
            metrics = {"hp/val_acc": summary["val_acc"], "hp/test_acc": summary["test_acc"]}
            metrics = {k: v for k, v in metrics.items() if v is not None}  # a run without validation has no hp/val_acc
            log_hparams(logger.experiment, hp, metrics, trainer.global_step, trial_id=f"{run_dir.parent.name}/{run_dir.name}")
            logger.save()


def _failed(cli: FashionCLI | None, status: int) -> int:
    """Remove the run folder this attempt reserved if it stayed empty, so a failed start leaves no trace."""
    reserved = getattr(cli, "reserved", None)
    if reserved is not None:
        for events in reserved.glob("events.out.tfevents.*"):
            if _holds_nothing_logged(events):  # Lightning opens the writer before the data's setup can fail
                events.unlink()
        try:
            reserved.rmdir()
        except OSError:
            pass  # not empty: it holds this run's checkpoints or logs
    return status


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
        f"  run folder      {summary['run_dir']}  (metrics.json, model.pth, checkpoints/)",
        "  dashboards      tensorboard --logdir lightning_logs",
    ]
    print("\n".join(lines))


def short_parse_error(exc: argparse.ArgumentError) -> str:
    """jsonargparse explains a bad value over many lines; say it in one: option, value, what is allowed."""
    text = str(exc)
    match = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.S)
    if not match:
        return text.splitlines()[0]
    key, rest = match.groups()
    given = re.search(r"Given value: (.*)", rest)
    literals = re.findall(r"Expected a typing\.Literal\[(.*?)\]$", rest, re.M)
    if given and literals:
        allowed = dict.fromkeys(c.strip(" '") for group in literals for c in group.split(","))  # pragma: no mutate: equivalent, no choice has an X
        return f"--{key}: {given.group(1)!r} is not one of {', '.join(allowed)}"
    return f"--{key}: {rest.strip().splitlines()[0]}"


def main(argv: list[str] | None = None) -> int:
    cli = stop = None
    try:
        cli = build_cli(argv)
        stop = graceful_stop(cli.trainer)
        summary = run_cli(cli)
    except argparse.ArgumentError as exc:
        print(f"error: {short_parse_error(exc)} (see python -m fashion_conv.fit --help)", file=sys.stderr)
        return 2
    except WriteError as exc:  # a full disk or quota: every earlier file is complete, since writes are atomic
        print(f"error: {exc}; free space, then resume with --ckpt_path last", file=sys.stderr)
        return _failed(cli, 1)
    except (FashionConvError, MisconfigurationException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _failed(cli, 1)
    except (SIGTERMException, KeyboardInterrupt):
        signum = stop.signum if stop is not None and stop.signum else signal.SIGINT  # KeyboardInterrupt: before training
        last = GracefulStop.last_path(cli.trainer) if cli is not None else None
        if last is not None and last.is_file():
            print(f"Stopped by {signal.Signals(signum).name}; {last} is saved: resume with --ckpt_path last.", file=sys.stderr)
        else:
            print(f"Stopped by {signal.Signals(signum).name} before the first checkpoint; nothing to resume.", file=sys.stderr)
        return _failed(cli, 128 + signum)
    except OSError as exc:  # a write outside atomic_path (TensorBoard's event file, config.yaml) on a full disk
        where = exc.filename2 or exc.filename or "a file of the run"
        print(f"error: {where}: cannot write it ({exc.strerror or exc}); nothing was lost: the checkpoints written "
              "before are complete, so free space, then resume with --ckpt_path last", file=sys.stderr)  # fmt: skip
        return _failed(cli, 1)
    if rank_zero_only.rank == 0:  # once, not on every process of a DDP run
        print_summary(summary)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # a clean exit for every process of a DDP run
    return 0


if __name__ == "__main__":
    sys.exit(main())
