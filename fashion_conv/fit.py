"""``python -m fashion_conv.fit``: prepare data, train, test the best checkpoint, export ``model.pth``.

A LightningCLI, so ``--model.*``, ``--data.*``, ``--trainer.*``, ``--config`` and ``--print_config`` work
as in any Lightning project. Defaults reproduce the notebook: ``cnn``, 5 epochs, batch 64, Adam 1e-3.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import re
import signal
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lightning import Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from fashion_conv.utils import quiet
from fashion_conv.utils.atomic import WriteError
from fashion_conv.callbacks.checkpoints import AtomicCheckpointIO, BestCheckpoint, GracefulStop
from fashion_conv.callbacks.dashboards import DatasetDashboards
from fashion_conv.data.datamodule import FashionMNISTDataModule
from fashion_conv.utils.errors import ArgumentValueError, FashionConvError
from fashion_conv.utils.memory import keep_freed_memory
from fashion_conv.research.explain.callback import ExplainFigures
from fashion_conv.models.classifier import FashionClassifier
from fashion_conv.runs import (
    backbone_name, check_resume, find_last_checkpoint, graceful_stop, print_summary, remove_if_unused, reserve_version,
    run_name, train_and_test,
)

SEED = 42
PROGRESS_REFRESH_STEPS = 25  # Lightning's bar redraws every step by default, which costs as much as an mlp step on CPU


class FashionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=Optional[str],
            default=None,
            help="Resume from this checkpoint; 'last' resumes the newest run of this backbone (or starts fresh).",
        )
        parser.add_argument(
            "--explain_figures",
            type=bool,
            default=True,
            help="At the end of fit, show the model's filters, feature maps and attributions in TensorBoard (IMAGES).",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config
        root = Path(config.trainer.default_root_dir or ".")
        self.runs_dir = root / "lightning_logs" / run_name(backbone_name(config.model))
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
        if self.resume_from is not None:  # checked before anything is written: a bad file never touches a run folder
            check_resume(self.resume_from, config)
            quiet.resuming()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # The default: one TensorBoard folder per backbone (fast_dev_run, a check for bugs, logs and saves nothing).
        if self.config.trainer.logger in (None, True) and not self.config.trainer.fast_dev_run:
            if self.version is None:
                self.version = reserve_version(self.runs_dir)
                self.reserved = self.runs_dir / self.version
            kwargs["logger"] = TensorBoardLogger(
                save_dir=self.runs_dir.parent, name=self.runs_dir.name, version=self.version, default_hp_metric=False
            )
        if self.config.trainer.plugins is None:  # a kill mid-save must not leave a truncated checkpoint
            kwargs["plugins"] = [AtomicCheckpointIO()]
        callbacks = self.config_init.get("trainer.callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        extra = []
        if self.config.trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            extra.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS))
        if "logger" in kwargs and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            extra.append(LearningRateMonitor(logging_interval="step"))  # TensorBoard's lr-Adam, at the logging steps
        if extra:
            kwargs["callbacks"] = [*callbacks, *extra]
        if self.config.trainer.profiler is None:
            kwargs["profiler"] = NoProfiler()
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.callbacks:
            if isinstance(callback, ExplainFigures):
                callback.enabled = self.config.explain_figures
        return trainer


class NoProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler, without a generator context manager around each of its ~60 hook calls
    a step (about 40 us a step on CPU, 3 % of an MLP step); ``--trainer.profiler simple`` etc. still work."""

    _null = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._null


def build_cli(argv: list[str] | dict | None, callbacks: Sequence[Callback] = ()) -> FashionCLI:
    """The ``fit`` command line from ``argv`` (a list of arguments or a config dict); ``callbacks`` join the defaults."""
    quiet.install()
    keep_freed_memory()  # this process trains: no fresh pages for every step's large buffers (fashion_conv.utils.memory)
    return FashionCLI(
        FashionClassifier,
        FashionMNISTDataModule,
        run=False,
        args=argv,
        seed_everything_default=SEED,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "max_epochs": 5,
            "callbacks": [
                # First (trainer.checkpoint_callback): the best epoch by validation accuracy, tested at the end;
                # also copied to checkpoints/best.ckpt, a name that commands and docs can use.
                BestCheckpoint(
                    monitor="val/acc", mode="max", filename="best-epoch={epoch}-val_acc={val/acc:.4f}",
                    auto_insert_metric_name=False,
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


def _failed(cli: FashionCLI | None, status: int) -> int:
    """Remove the run folder this attempt reserved if it stayed empty, so a failed start leaves no trace."""
    reserved = getattr(cli, "reserved", None)
    if reserved is not None:
        remove_if_unused(reserved)
    return status


def flag_name(argument: str) -> str:
    """The command-line flag of a model or data module argument: ``lr`` is ``--model.lr``, ``batch_size`` is
    ``--data.batch_size``."""
    for group, cls in (("model", FashionClassifier), ("data", FashionMNISTDataModule)):
        if argument in inspect.signature(cls).parameters:
            return f"--{group}.{argument}"
    return argument


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
        allowed = dict.fromkeys(c.strip(" '") for group in literals for c in group.split(","))  # pragma: no mutate
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
    except ArgumentValueError as exc:  # the classes name their argument (lr); the command line knows it as --model.lr
        print(f"error: {exc.under(flag_name(exc.argument))}", file=sys.stderr)
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
