"""``python -m fashion_conv.fit``: prepare data, train, test the best checkpoint, export ``model.pth``.

A LightningCLI, so ``--model.*``, ``--data.*``, ``--trainer.*``, ``--config`` and ``--print_config`` work
as in any Lightning project. Defaults reproduce the notebook: ``cnn``, 5 epochs, batch 64, Adam 1e-3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fashion_conv.atomic import atomic_path, atomic_write_text
from fashion_conv.backbones import read_weights_file
from fashion_conv.checkpoints import AtomicCheckpointIO, GracefulStop
from fashion_conv.dashboards import DatasetDashboards
from fashion_conv.datamodule import FashionMNISTDataModule
from fashion_conv.errors import FashionConvError
from fashion_conv.module import FashionClassifier

SEED = 42
PROGRESS_REFRESH_STEPS = 25


def run_name(backbone: str) -> str:
    """Folder name of a run group: the registry name, or the class name of a class path."""
    return backbone.rpartition(".")[2]


def find_last_checkpoint(runs_dir: Path) -> Path | None:
    """The newest ``version_*/checkpoints/last.ckpt`` under a backbone's run folder."""
    found = sorted(runs_dir.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


class FashionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=Optional[str],
            default=None,
            help="Resume from this checkpoint; 'last' resumes the newest run of this backbone (or starts fresh).",
        )

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
        if self.resume_from is not None:
            read_weights_file(self.resume_from)  # a broken or unsafe file is an error here, never a silent fresh start

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        if self.config.trainer.logger in (None, True):  # the default: one TensorBoard folder per backbone
            kwargs["logger"] = TensorBoardLogger(
                save_dir=self.runs_dir.parent, name=self.runs_dir.name, version=self.version, default_hp_metric=False
            )
        if self.config.trainer.plugins is None:  # a kill mid-save must not leave a truncated checkpoint
            kwargs["plugins"] = [AtomicCheckpointIO()]
        callbacks = self._get(self.config_init, "trainer").get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if self.config.trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Lightning's bar redraws every step, which costs as much as an MLP step on CPU.
            kwargs["callbacks"] = [*callbacks, TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS)]
        if self.config.trainer.profiler is None:
            kwargs["profiler"] = NoProfiler()
        return super().instantiate_trainer(**kwargs)


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


def build_cli(argv: list[str] | None) -> FashionCLI:
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
                # First (trainer.checkpoint_callback): the best epoch by validation accuracy, tested at the end.
                ModelCheckpoint(
                    monitor="val/acc", mode="max", filename="best-epoch={epoch}-val_acc={val/acc:.4f}", auto_insert_metric_name=False
                ),
                # checkpoints/last.ckpt after every epoch, for --ckpt_path last. (Lightning 2.6's save_last=True
                # skips epochs that did not improve the monitored metric.)
                ModelCheckpoint(filename="last", enable_version_counter=False),
                DatasetDashboards(),
                GracefulStop(),
            ],
        },
        parser_kwargs={"prog": "python -m fashion_conv.fit", "description": __doc__.splitlines()[0], "exit_on_error": False},
    )


def train_and_test(trainer: Trainer, model: LightningModule, data: LightningDataModule, ckpt_path: Path | None, seed: Any) -> dict:
    """Fit, test the best checkpoint on the official test set, write ``metrics.json`` and ``model.pth``."""
    start = time.perf_counter()
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    train_seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    tested = trainer.test(model, datamodule=data, ckpt_path=best or None, verbose=False, weights_only=True)[0]
    summary = {
        "backbone": model.hparams.backbone,
        "params": model.num_params,
        "epochs": trainer.current_epoch,
        "val_acc": float(checkpoint.best_model_score) if best else None,
        "test_acc": tested["test/acc"],
        "test_loss": tested["test/loss"],
        "tta_hflip": bool(model.hparams.get("tta_hflip", False)),  # val_acc and test_acc averaged over mirror images
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
            hp = {k: v for k, v in summary.items() if k in ("backbone", "params", "seed", "precision", "epochs")}
            hp.update({k: model.hparams[k] for k in RECIPE_MODEL_HPARAMS if k in model.hparams})
            data_hp = trainer.datamodule.hparams
            hp.update({k: data_hp[k] for k in RECIPE_DATA_HPARAMS if k in data_hp})
            logger.log_hyperparams(hp, metrics={"hp/val_acc": summary["val_acc"] or 0.0, "hp/test_acc": summary["test_acc"]})
            logger.save()


def print_summary(summary: dict) -> None:
    val = f"{summary['val_acc']:.4f}" if summary["val_acc"] is not None else "n/a"
    tta = ", flip TTA" if summary.get("tta_hflip") else ""
    lines = [
        "",
        "fashion_conv run summary",
        f"  backbone        {summary['backbone']} ({summary['params']:,} parameters)",
        f"  epochs          {summary['epochs']}  (seed {summary['seed']}, precision {summary['precision']})",
        f"  best val acc    {val}",
        f"  test acc        {summary['test_acc']:.4f}  (official test set, best checkpoint by val/acc{tta})",
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
        allowed = dict.fromkeys(c.strip(" '") for group in literals for c in group.split(","))
        return f"--{key}: {given.group(1)!r} is not one of {', '.join(allowed)}"
    return f"--{key}: {rest.strip().splitlines()[0]}"


def main(argv: list[str] | None = None) -> int:
    try:
        cli = build_cli(argv)
        summary = train_and_test(cli.trainer, cli.model, cli.datamodule, cli.resume_from, cli.config.seed_everything)
    except argparse.ArgumentError as exc:
        print(f"error: {short_parse_error(exc)} (see python -m fashion_conv.fit --help)", file=sys.stderr)
        return 2
    except (FashionConvError, MisconfigurationException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SIGTERMException:
        print("Stopped by SIGTERM; checkpoints/last.ckpt is saved: resume with --ckpt_path last.", file=sys.stderr)
        return 128 + signal.SIGTERM
    if cli.trainer.is_global_zero:
        print_summary(summary)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # a clean exit for every process of a DDP run
    return 0


if __name__ == "__main__":
    sys.exit(main())
