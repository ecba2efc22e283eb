"""The module and data module are textbook Lightning: any Trainer feature works with them, as Lightning documents it,
both in a user's own Trainer and under ``python -m fashion_conv.fit``; the package uses no private Lightning name."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger

from conftest import REPO
from fashion_conv import FashionClassifier, FashionMNISTDataModule
from fashion_conv.fit import main


class CountBatches(Callback):
    """What a user's callback sees: one ``on_train_batch_end`` call per batch, each with that batch's images."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.optimizer_steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        x, y = batch
        assert x.shape[1:] == (1, 28, 28) and len(x) == len(y)
        self.sizes.append(len(y))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.optimizer_steps += 1


def test_another_project_trains_the_classes_in_its_own_trainer(tiny_data_dir, tmp_path):
    """Clipping, accumulation, a batch-counting callback and LearningRateMonitor, in a Trainer of the user's own."""
    L.seed_everything(0, verbose=False)
    model = FashionClassifier("mlp", lr_schedule="cosine")
    data = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=16)  # 100 training images: 6 x 16 + 4
    counter, lrs = CountBatches(), LearningRateMonitor(logging_interval="step")
    trainer = L.Trainer(
        max_epochs=2, gradient_clip_val=0.5, accumulate_grad_batches=2, callbacks=[counter, lrs], log_every_n_steps=1,
        logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert counter.sizes == [16] * 6 + [4] + [16] * 6 + [4]  # one call per batch, 7 a epoch
    assert counter.optimizer_steps == trainer.global_step == 2 * 4  # ceil(7 / 2) optimizer steps an epoch
    # The cosine schedule is laid out over the optimizer steps Lightning estimates (8), stepped once per optimizer
    # step; the monitor writes the rate at each batch, so each step's rate twice (the epoch's 7th batch once).
    assert trainer.lr_scheduler_configs[0].scheduler.T_max == 8
    cosine = [1e-3 * (1 + math.cos(math.pi * step / 8)) / 2 for step in range(8)]
    per_batch = [cosine[e * 4 + b // 2] for e in range(2) for b in range(7)]
    assert lrs.lrs["lr-Adam"] == pytest.approx(per_batch, rel=1e-12)
    tested = trainer.test(model, datamodule=data, verbose=False)[0]
    assert 0 <= tested["test/acc"] <= 1


def test_gradient_clipping_clips_what_the_optimizer_sees(tiny_data_dir):
    """gradient_clip_val reaches the step: with a tiny clip norm, every step's gradient norm is the clip value."""
    norms = []

    class Norms(Callback):
        def on_train_start(self, trainer, pl_module):
            def record(optimizer, args, kwargs):  # after the step: the gradients it used, clipped by Lightning
                grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
                norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

            trainer.optimizers[0].register_step_post_hook(record)

    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=3, gradient_clip_val=1e-3, callbacks=[Norms()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(FashionClassifier("mlp"), datamodule=FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=16))
    assert norms == pytest.approx([1e-3] * 3, rel=1e-4)


def fit_args(data_dir, root, *extra: str) -> list[str]:
    return [
        "--data.data_dir", str(data_dir), "--data.val_size", "20", "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--model.backbone", "mlp",
        "--explain_figures", "false", *extra,
    ]  # fmt: skip


def test_fit_hands_a_users_callback_one_batch_of_64_per_call(make_tiny_data, tmp_path, monkeypatch):
    """``--trainer.callbacks+=my_pkg.CountBatches`` with fit's defaults (batch 64): 200 training images, 4 batches an
    epoch (64, 64, 64, 8), 4 calls."""
    (tmp_path / "my_pkg.py").write_text(
        "from lightning.pytorch.callbacks import Callback\n"
        "import json\n"
        "class CountBatches(Callback):\n"
        "    sizes = []\n"
        "    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):\n"
        "        self.sizes.append(len(batch[1]))\n"
        "    def on_train_end(self, trainer, pl_module):\n"
        "        open(trainer.default_root_dir + '/sizes.json', 'w').write(json.dumps(self.sizes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = make_tiny_data(tmp_path / "data", n_train=220)
    args = fit_args(data, tmp_path, "--trainer.max_epochs", "2", "--trainer.callbacks+=my_pkg.CountBatches")
    assert main(args) == 0
    assert json.loads((tmp_path / "sizes.json").read_text()) == [64, 64, 64, 8] * 2
    sys.modules.pop("my_pkg", None)


@pytest.mark.parametrize(
    ("extra", "steps"),
    [
        (["--trainer.fast_dev_run", "true"], 1),  # one training batch, one validation batch, no checkpoint
        (["--trainer.max_steps", "5", "--trainer.max_epochs", "-1"], 5),  # stops mid-epoch, at exactly 5 steps
        (["--trainer.limit_train_batches", "3", "--trainer.max_epochs", "2"], 6),
        (["--trainer.accumulate_grad_batches", "3", "--trainer.max_epochs", "1"], 3),  # 7 batches: 3 + 3 + 1
    ],
)
def test_fit_honours_the_trainer_arguments_that_count_batches(tiny_data_dir, tmp_path, capsys, extra, steps):
    assert main(fit_args(tiny_data_dir, tmp_path, "--data.batch_size", "16", *extra)) == 0
    out = capsys.readouterr().out
    if "fast_dev_run" in extra[0]:  # a check for bugs: Lightning logs and saves nothing, and neither does fit
        assert "run folder      none: fast_dev_run writes no files" in out
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
        return
    (run,) = (tmp_path / "lightning_logs" / "mlp").glob("version_*")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps
    assert json.loads((run / "metrics.json").read_text())["test_acc"] is not None


def test_fit_validates_and_logs_at_the_intervals_asked(tiny_data_dir, tmp_path):
    """val_check_interval=3 validates after batches 3 and 6 of each 7-batch epoch; log_every_n_steps=2 writes the step
    loss at steps 1, 3, 5, ... (counted from 0) and LearningRateMonitor's lr-Adam with it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = ["--data.batch_size", "16", "--trainer.max_epochs", "1", "--trainer.val_check_interval", "3",
             "--trainer.log_every_n_steps", "2"]  # fmt: skip
    assert main(fit_args(tiny_data_dir, tmp_path, *extra)) == 0
    (run,) = (tmp_path / "lightning_logs" / "mlp").glob("version_*")
    events = EventAccumulator(str(run))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in ("train/loss", "lr-Adam", "val/acc", "val/ece")}
    assert steps == {"train/loss": [1, 3, 5], "lr-Adam": [1, 3, 5], "val/acc": [2, 5], "val/ece": [2, 5]}


def test_the_library_raises_value_errors_naming_its_arguments_and_fit_names_the_flags(tiny_data_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^lr must be positive, got -1$"):
        FashionClassifier(lr=-1)
    with pytest.raises(ValueError, match=r"^batch_size must be at least 1, got 0$"):
        FashionMNISTDataModule(batch_size=0)
    assert main(fit_args(tiny_data_dir, tmp_path, "--model.lr", "-1")) == 1
    assert capsys.readouterr().err == "error: --model.lr must be positive, got -1.0\n"
    assert main(fit_args(tiny_data_dir, tmp_path, "--data.batch_size", "0")) == 1
    assert capsys.readouterr().err == "error: --data.batch_size must be at least 1, got 0\n"


def test_epoch_metrics_are_averaged_over_processes_under_ddp(tiny_data_dir, tmp_path, monkeypatch):
    """What each epoch-level log asks of a DDP run (here one process, where the averages change nothing): losses
    averaged over processes (sync_dist), accuracies and ECE by torchmetrics, which gathers every process's counts."""
    asked, log = {}, FashionClassifier.log

    def record(self, name, value, **kwargs):
        asked.setdefault(name, kwargs.get("sync_dist"))
        log(self, name, value, **kwargs)

    monkeypatch.setattr(FashionClassifier, "log", record)
    assert main(fit_args(tiny_data_dir, tmp_path, "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1")) == 0
    assert asked == {"train/loss": None, "train/acc": True, "train/loss_epoch": True, "val/loss": True, "val/acc": None,
                     "val/ece": None, "test/loss": True, "test/acc": None}  # fmt: skip


def lightning_private_names(path: Path) -> list[str]:
    """``_name`` attributes read or written on anything but our own ``self``/``cls``, and ``_name`` imports from
    Lightning, in one file: "file:line name"."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning"):
            found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1].startswith("_") and node.module != "__future__":
            found.append(f"{path.name}:{node.lineno} {node.module}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_the_package_uses_no_private_lightning_name():
    """A private name of a framework breaks with its next release; ours (``self._x``) are ours to change. Every other
    ``obj._x`` in the package is listed, and the list must be empty."""
    found = [hit for path in sorted((REPO / "fashion_conv").rglob("*.py")) for hit in lightning_private_names(path)]
    assert found == []


def test_the_private_name_scan_finds_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n\n"
        "trainer.fit_loop.epoch_loop._batches_that_stepped += 1\n"
        "self._mine = 1\n"
    )
    assert lightning_private_names(probe) == ["probe.py:1 _update_n", "probe.py:2 ._batches_that_stepped"]
