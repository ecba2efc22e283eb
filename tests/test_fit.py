"""``python -m fashion_conv.fit`` end to end on tiny data: outputs, TensorBoard, reloads, resume, bad command lines."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import Logger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_conv import FashionClassifier, FashionConvError, load_backbone
from fashion_conv.fit import main
from nets import Payload


def fit_args(data_dir, root, *extra):
    return [
        "--data.data_dir", str(data_dir), "--data.val_size", "20", "--data.batch_size", "16",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1", "--model.backbone", "mlp", *extra,
    ]  # fmt: skip


def tensorboard_tags(run_dir) -> dict[str, set]:
    tags = {"scalars": set(), "images": set(), "tensors": set()}
    for events in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
    return tags


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, make_tiny_data):
    """One tiny run shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("run")
    make_tiny_data(tmp / "data")
    assert main(fit_args(tmp / "data", tmp)) == 0
    return tmp, tmp / "lightning_logs" / "mlp" / "version_0"


def hparams_tab(run) -> dict:
    """The HPARAMS tab's columns of a run folder, read from its event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = {}
    for events in run.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    for name, v in data.session_start_info.hparams.items():
                        hparams[name] = getattr(v, v.WhichOneof("kind"))
                    hparams["(trial)"] = data.session_start_info.group_name
    return hparams


def test_outputs(finished_run):
    # The first test of the shared run, so mutmut credits the run's own code to it: it checks all the run writes.
    _, run = finished_run
    names = {p.name for p in run.iterdir()}
    assert {"metrics.json", "model.pth", "config.yaml", "hparams.yaml", "checkpoints"} <= names
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch=") for n in ckpts)
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "metrics.json").read_text() == json.dumps(metrics, indent=2) + "\n"  # one key a line, for people too
    assert {"backbone", "params", "epochs", "val_acc", "test_acc", "train_seconds", "seed"} <= set(metrics)
    assert metrics["backbone"] == "mlp" and metrics["params"] == 203_530 and metrics["epochs"] == 2
    assert metrics["seed"] == 42 and 0 <= metrics["test_acc"] <= 1
    assert "seed_everything: 42" in (run / "config.yaml").read_text()
    best = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]
    pth = torch.load(run / "model.pth", weights_only=True)  # the tested (best) backbone's weights
    assert pth.keys() == {k.removeprefix("backbone.") for k in best if k.startswith("backbone.")}
    assert all(torch.equal(v, best[f"backbone.{k}"]) for k, v in pth.items())
    assert hparams_tab(run) == {
        "backbone": "mlp", "params": 203_530, "seed": 42, "precision": "32-true", "epochs": 2, "lr": 1e-3, "lr_schedule": "none",
        "weight_decay": 0, "label_smoothing": 0, "tta_hflip": False, "batch_size": 16, "random_shift": 0, "hflip": False, "random_erasing": 0,
        "recipe": "Adam lr 0.001, batch 16, 32-true", "(trial)": "mlp/version_0",
    }  # fmt: skip
    events = EventAccumulator(str(run))
    events.Reload()
    steps = 2 * 7  # 2 epochs of 100 images in batches of 16
    for tag, value in (("hp/val_acc", metrics["val_acc"]), ("hp/test_acc", metrics["test_acc"])):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [(steps, pytest.approx(value))], tag


def test_a_run_without_validation_has_no_val_acc_and_tests_its_last_weights(tiny_data_dir, tmp_path, capsys):
    assert main(fit_args(tiny_data_dir, tmp_path, "--data.val_size", "0", "--trainer.max_epochs", "1")) == 0
    out = capsys.readouterr().out
    assert "best val acc    n/a\n" in out and "(official test set, last weights: no validation)" in out
    run = tmp_path / "lightning_logs" / "mlp" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_acc"] is None and metrics["best_checkpoint"] is None
    events = EventAccumulator(str(run))
    events.Reload()
    assert not {"val/acc", "val/loss", "hp/val_acc"} & set(events.Tags()["scalars"])  # no 0.0 standing in for "none"
    steps = 8  # 120 training images in batches of 16
    assert [(e.step, e.value) for e in events.Scalars("hp/test_acc")] == [(steps, pytest.approx(metrics["test_acc"]))]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    pth = torch.load(run / "model.pth", weights_only=True)  # without validation, the last weights are tested
    assert all(torch.equal(v, last[f"backbone.{k}"]) for k, v in pth.items())


def test_summary_is_printed(tiny_data_dir, tmp_path, capsys):
    assert main(fit_args(tiny_data_dir, tmp_path, "--trainer.max_epochs", "1")) == 0
    out = capsys.readouterr().out
    for piece in ("backbone        mlp (203,530 parameters)", "best val acc", "best checkpoint by val/acc)", "training time", "lightning_logs/mlp/version_0"):
        assert piece in out
    assert "Test metric" not in out  # the summary, not Lightning's test table as well


def test_tensorboard_run(finished_run):
    _, run = finished_run
    tags = tensorboard_tags(run)
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "model/params"} <= tags["scalars"]
    assert {"data/train_samples", "data/class_counts_train", "test/confusion_matrix"} <= tags["images"]
    assert {"hp/val_acc", "hp/test_acc"} <= tags["scalars"]  # hyperparameters logged with the final metrics


def test_hparams_tab_lists_the_recipe(finished_run):
    hparams = hparams_tab(finished_run[1])
    assert hparams["backbone"] == "mlp" and hparams["lr_schedule"] == "none" and not hparams["tta_hflip"]
    assert hparams["batch_size"] == 16 and hparams["random_shift"] == 0 and hparams["weight_decay"] == 0


def test_checkpoint_and_model_pth_reload_on_their_own(finished_run):
    _, run = finished_run
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    raw = torch.load(best, weights_only=True, map_location="cpu")  # no pickled objects inside
    assert raw["hyper_parameters"]["backbone"] == "mlp"
    model = FashionClassifier.load_from_checkpoint(best, map_location="cpu", weights_only=True)
    net = load_backbone(run / "model.pth", "mlp")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model.eval()(x), net(x))  # model.pth holds the best checkpoint's weights


def test_resume_with_ckpt_path_last(tiny_data_dir, tmp_path, capsys):
    assert main(fit_args(tiny_data_dir, tmp_path, "--trainer.max_epochs", "1", "--ckpt_path", "last")) == 0
    assert "starting a fresh run" in capsys.readouterr().err
    assert main(fit_args(tiny_data_dir, tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", "last")) == 0
    runs = sorted((tmp_path / "lightning_logs" / "mlp").iterdir())
    assert [r.name for r in runs] == ["version_0"]  # continued in the same run folder
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumed_from"].endswith("last.ckpt")
    assert not list((runs[0] / "checkpoints").glob("last-v*.ckpt"))  # last.ckpt itself, replaced, not last-v1.ckpt


def test_backbone_by_class_path(tiny_data_dir, tmp_path):
    assert main(fit_args(tiny_data_dir, tmp_path, "--model.backbone", "nets.TinyNet", "--trainer.max_epochs", "1")) == 0
    run = tmp_path / "lightning_logs" / "TinyNet" / "version_0"
    assert json.loads((run / "metrics.json").read_text())["backbone"] == "nets.TinyNet"
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    with pytest.raises(FashionConvError, match="confirm with --backbone nets.TinyNet"):  # a checkpoint never picks code to import
        FashionClassifier.load_from_checkpoint(ckpt, weights_only=True)
    loaded = FashionClassifier.load_from_checkpoint(ckpt, weights_only=True, backbone="nets.TinyNet")  # the caller names it
    assert type(loaded.backbone).__name__ == "TinyNet"


def test_print_config_shows_the_notebook_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--print_config"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for line in ("seed_everything: 42", "max_epochs: 5", "backbone: cnn", "lr: 0.001", "batch_size: 64", "data_dir: data"):
        assert line in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model.backbone", "resnet"], "unknown backbone 'resnet'; choose one of cnn, cnn5, convnet, mlp"),
        (["--data.batch_size", "0"], "--data.batch_size must be at least 1, got 0"),
        (["--data.val_size", "1000"], "--data.val_size 1000 leaves no training images"),
        (["--ckpt_path", "nope.ckpt"], "nope.ckpt: no such file"),
    ],
)
def test_bad_command_lines_give_one_clear_error(tiny_data_dir, tmp_path, capsys, extra, message):
    assert main(fit_args(tiny_data_dir, tmp_path, *extra)) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--trainer.precision", "7"], "--trainer.precision: '7' is not one of 64, 32, 16"),
        (["--data.batch_size", "x"], "--data.batch_size: Expected a <class 'int'>"),
        (["--no_such_option", "1"], "unrecognized arguments: --no_such_option"),
    ],
)
def test_unparsable_command_lines_give_one_line(tiny_data_dir, tmp_path, capsys, extra, message):
    assert main(fit_args(tiny_data_dir, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_missing_data_dir_is_one_error_and_leaves_no_run_folder(tmp_path, capsys):
    assert main(fit_args(tmp_path / "nope", tmp_path)) == 1
    assert "does not exist" in capsys.readouterr().err
    assert (tmp_path / "lightning_logs" / "mlp").is_dir() and not list(tmp_path.glob("lightning_logs/mlp/*"))  # its version_0 is removed


def test_a_bad_csv_stops_fit_with_file_line_and_column(tiny_data_dir, tmp_path, capsys):
    csv = tiny_data_dir / "processed" / "fashion-mnist-train.csv"
    lines = csv.read_text().splitlines()
    cells = lines[7].split(",")
    cells[12] = "NaN"
    lines[7] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    assert main(fit_args(tiny_data_dir, tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"error: {csv}, line 8, column 13: pixel12 is 'NaN', expected an integer in 0-255"), err
    assert not list(tmp_path.glob("lightning_logs/mlp/*"))  # no run folder, not even an empty event file


def test_an_error_in_the_datas_setup_leaves_no_run_folder(tiny_data_dir, tmp_path, capsys):
    assert main(fit_args(tiny_data_dir, tmp_path, "--data.val_size", "500")) == 1
    csv = tiny_data_dir / "processed" / "fashion-mnist-train.csv"
    assert capsys.readouterr().err.strip().endswith(f"error: --data.val_size 500 leaves no training images: {csv} has 120 rows")
    assert not list(tmp_path.glob("lightning_logs/mlp/*"))  # Lightning had opened an event file before the setup


def test_only_event_files_with_nothing_logged_count_as_empty(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from fashion_conv.runs import _holds_nothing_logged

    for name, scalars in (("empty", 0), ("logged", 1)):
        writer = SummaryWriter(tmp_path / name)
        for step in range(scalars):
            writer.add_scalar("train/loss", 1.5, step)
        writer.close()
        (events,) = (tmp_path / name).glob("events.out.tfevents.*")
        assert _holds_nothing_logged(events) is (scalars == 0), name


def test_short_parse_error_says_option_value_and_choices_in_one_line():
    from fashion_conv.fit import short_parse_error

    union = (
        'Parser key "trainer.precision":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Expected a typing.Literal[64, 32]\n    - Expected a typing.Literal['16-mixed', 'bf16-mixed', '32']\n"
        "    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n  Given value: 7"
    )
    cases = {
        union: "--trainer.precision: '7' is not one of 64, 32, 16-mixed, bf16-mixed",  # each choice once, unquoted
        "Parser key \"data.batch_size\":\n  Expected a <class 'int'>\n  Given value: x": "--data.batch_size: Expected a <class 'int'>",
        "Parser key \"data.batch_size\":\n  Expected a <class 'int'>. Got value: x": "--data.batch_size: Expected a <class 'int'>. Got value: x",
        "unrecognized arguments: --nope 1\nmore": "unrecognized arguments: --nope 1",
    }
    for text, line in cases.items():
        assert short_parse_error(argparse.ArgumentError(None, text)) == line


def test_resume_last_picks_the_newest_checkpoint_not_the_highest_name(tmp_path):
    import os

    from fashion_conv.runs import find_last_checkpoint

    assert find_last_checkpoint(tmp_path) is None
    for version, mtime in (("version_9", 1_000_000), ("version_10", 2_000_000), ("version_2", 1_500_000)):
        last = tmp_path / version / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True)
        last.touch()
        os.utime(last, (mtime, mtime))
    assert find_last_checkpoint(tmp_path) == tmp_path / "version_10" / "checkpoints" / "last.ckpt"


def test_settings_compare_as_config_yaml_writes_them():
    from fashion_conv.runs import _plain

    assert _plain({"a": (1, (2, 3)), "b": [{"c": (4,)}]}) == {"a": [1, [2, 3]], "b": [{"c": [4]}]}


def test_run_trains_with_the_extra_callbacks_it_is_given(tiny_data_dir, tmp_path):
    from lightning import Callback

    from fashion_conv.fit import run

    class CountEpochs(Callback):
        epochs = 0

        def on_train_epoch_end(self, trainer, pl_module):
            self.epochs += 1

    counter = CountEpochs()
    summary = run(fit_args(tiny_data_dir, tmp_path, "--trainer.max_epochs", "1"), callbacks=[counter])
    assert counter.epochs == 1 and summary["backbone"] == "mlp" and summary["epochs"] == 1


def test_a_class_path_run_resumes_when_named_again(tiny_data_dir, tmp_path):
    tiny = ("--model.backbone", "nets.TinyNet")
    assert main(fit_args(tiny_data_dir, tmp_path, *tiny, "--trainer.max_epochs", "1")) == 0
    # The checkpoint names a class path; --model.backbone names it too, which is the consent to import it.
    assert main(fit_args(tiny_data_dir, tmp_path, *tiny, "--trainer.max_epochs", "2", "--ckpt_path", "last")) == 0
    assert json.loads((tmp_path / "lightning_logs" / "TinyNet" / "version_0" / "metrics.json").read_text())["epochs"] == 2


class _ListedEmpty(type(Path())):
    """A runs folder whose listing came before other runs made their folders."""

    def glob(self, pattern):
        return iter(())


def test_each_run_reserves_the_next_free_version_folder(tmp_path, monkeypatch):
    from fashion_conv.runs import _VERSION_ENV, reserve_version

    monkeypatch.setenv(_VERSION_ENV, "")  # restored afterwards: reserve_version sets it for DDP workers
    runs = tmp_path / "lightning_logs" / "mlp"
    assert reserve_version(runs) == "version_0"
    (runs / "version_7").mkdir()
    (runs / "version_x").mkdir()  # not a number: ignored
    assert reserve_version(runs) == "version_8" and reserve_version(runs) == "version_9"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_7", "version_8", "version_9", "version_x"]
    # Another run made folders after this one listed them: it tries the next number until mkdir succeeds.
    racing = tmp_path / "racing"
    for n in (0, 1, 2):
        (racing / f"version_{n}").mkdir(parents=True)
    assert reserve_version(_ListedEmpty(racing)) == "version_3"
    monkeypatch.setenv("LOCAL_RANK", "0")  # rank 0 of a DDP run reserves as a single process does
    assert reserve_version(runs) == "version_10"
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP worker joins the folder that rank 0 reserved
    assert reserve_version(runs) == "version_10" and len(list(runs.iterdir())) == 6


def test_drop_earlier_hparams_leaves_files_without_them_untouched(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from fashion_conv.runs import drop_earlier_hparams

    writer = SummaryWriter(tmp_path)
    writer.add_scalar("train/loss", 1.5, 0)
    writer.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    before = (events.stat().st_ino, events.read_bytes())
    drop_earlier_hparams(tmp_path)
    assert (events.stat().st_ino, events.read_bytes()) == before  # not rewritten (an atomic rewrite is a new inode)


def test_fit_builds_its_trainer_with_our_logger_checkpoint_io_and_progress_bar(tiny_data_dir, tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar, TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from fashion_conv.callbacks.checkpoints import AtomicCheckpointIO
    from lightning.pytorch.profilers import SimpleProfiler

    from fashion_conv.research.explain.callback import ExplainFigures
    from fashion_conv.fit import PROGRESS_REFRESH_STEPS, NoProfiler, build_cli

    trainer = build_cli(fit_args(tiny_data_dir, tmp_path, "--trainer.enable_progress_bar", "true")).trainer
    assert isinstance(trainer.logger, TensorBoardLogger) and trainer.logger.log_dir == str(tmp_path / "lightning_logs" / "mlp" / "version_0")
    assert trainer.logger._default_hp_metric is False  # no hp_metric -1 scalar: the HPARAMS tab gets real metrics
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # a kill mid-save keeps the old checkpoint
    bars = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert [type(b) for b in bars] == [TQDMProgressBar] and bars[0].refresh_rate == PROGRESS_REFRESH_STEPS
    assert type(trainer.profiler) is NoProfiler and [c.enabled for c in trainer.callbacks if isinstance(c, ExplainFigures)] == [True]
    options = ("--trainer.profiler", "simple", "--explain_figures", "false")
    trainer = build_cli(fit_args(tiny_data_dir, tmp_path / "options", *options)).trainer
    assert type(trainer.profiler) is SimpleProfiler and [c.enabled for c in trainer.callbacks if isinstance(c, ExplainFigures)] == [False]
    # One callback in a config file is not a list; it joins the defaults all the same.
    config = {"data": {"data_dir": str(tiny_data_dir)}, "trainer": {"default_root_dir": str(tmp_path), "callbacks": {"class_path": "LearningRateMonitor"}}}
    callbacks = build_cli(config).trainer.callbacks
    assert sum(isinstance(c, LearningRateMonitor) for c in callbacks) == 1 and sum(isinstance(c, TQDMProgressBar) for c in callbacks) == 1
    without = build_cli(fit_args(tiny_data_dir, tmp_path, "--trainer.logger", "false")).trainer
    assert without.logger is None and [p.name for p in (tmp_path / "lightning_logs" / "mlp").iterdir()] == ["version_0"]  # none reserved


def test_ctrl_c_while_testing_stops_the_run_without_a_report(tiny_data_dir, tmp_path, capsys):
    """fit catches SIGINT and SIGTERM from data set-up to the last file written (the slow tests signal a real process)."""
    import signal

    args = fit_args(tiny_data_dir, tmp_path, "--trainer.max_epochs", "1", "--trainer.callbacks+=nets.SignalInTest")
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN under mutmut
    assert main(args) == 130
    run = tmp_path / "lightning_logs" / "mlp" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert capsys.readouterr().err.strip().endswith(f"Stopped by SIGINT; {last} is saved: resume with --ckpt_path last.")
    assert last.is_file() and not (run / "metrics.json").exists() and not (run / "model.pth").exists()
    assert signal.getsignal(signal.SIGINT) is before  # given back


class _NoFolderLogger(Logger):
    name, version = "nofolder", 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_train_and_test_runs_in_a_users_own_trainer_and_loads_weights_only(tiny_data_dir, tmp_path, monkeypatch):
    """Importers call train_and_test with their own Trainer (no GracefulStop): it times the run itself."""
    import time

    from lightning import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fashion_conv import FashionMNISTDataModule
    from fashion_conv.runs import train_and_test

    def trainer(monitor="val/acc", logger=False):
        best = ModelCheckpoint(monitor=monitor, mode="max")
        return Trainer(max_epochs=1, default_root_dir=tmp_path, logger=logger, enable_progress_bar=False, enable_model_summary=False, callbacks=[best])

    data = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=16)
    assert data.hparams.data_dir == str(tiny_data_dir)  # a Path, pickled in each checkpoint, fails weights-only loads
    loads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: loads.append(kw.get("weights_only")) or load(*a, **kw))
    start = time.perf_counter()
    fit = trainer()
    summary = train_and_test(fit, FashionClassifier("mlp"), data, None, 7)
    assert 0 < summary["train_seconds"] <= round(time.perf_counter() - start, 2) + 0.01
    assert summary["train_seconds"] == round(summary["train_seconds"], 2)
    assert summary["val_acc"] == float(fit.checkpoint_callback.best_model_score) and summary["run_dir"] == str(tmp_path)
    assert summary["seed"] == 7 and summary["epochs"] == 1 and summary["accelerator"] == "CPUAccelerator" and summary["tta_hflip"] is False
    assert summary["resumed_from"] is None
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary
    # A checkpoint callback that monitors nothing (its best is the last), and a logger with no folder of its own.
    summary = train_and_test(trainer(monitor=None, logger=_NoFolderLogger()), FashionClassifier("mlp"), data, None, 7)
    assert summary["val_acc"] is None and summary["best_checkpoint"].endswith(".ckpt") and summary["run_dir"] == str(tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary  # written in default_root_dir, and said so
    marker, evil = tmp_path / "ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, evil)
    with pytest.raises(Exception, match="Weights only load failed"):
        train_and_test(trainer(), FashionClassifier("mlp"), data, evil, 7)
    assert not marker.exists()
    assert loads == [True, True, True]  # each best checkpoint for test, then the resume: said explicitly, not torch's default


def test_ctrl_c_while_fit_starts_and_a_full_disk_in_setup_are_one_line_each(tiny_data_dir, tmp_path, capsys):
    assert main(fit_args(tiny_data_dir, tmp_path, "--trainer.callbacks+=nets.CtrlCAtStart")) == 130
    assert capsys.readouterr().err == "Stopped by SIGINT before the first checkpoint; nothing to resume.\n"
    assert main(fit_args(tiny_data_dir, tmp_path, "--trainer.callbacks+=nets.FullDiskInSetup")) == 1
    ckpt = tmp_path / "run.ckpt"
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == f"error: {ckpt}: cannot write it (No space left on device); nothing was lost: any earlier run.ckpt is intact; free space, then resume with --ckpt_path last"
    assert not list(tmp_path.glob("lightning_logs/mlp/*"))  # the reserved folder held nothing yet: removed
    for kind, where in (("named", ckpt), ("unnamed", "a file of the run")):
        args = fit_args(tiny_data_dir, tmp_path, "--trainer.callbacks+=nets.FullDiskInSetup", f"--trainer.callbacks.kind={kind}")
        assert main(args) == 1
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"error: {where}: cannot write it (No space left on device); nothing was lost: the checkpoints written "
            "before are complete, so free space, then resume with --ckpt_path last"
        )
        assert not list(tmp_path.glob("lightning_logs/mlp/*"))


def test_without_a_root_dir_runs_go_under_the_working_folder(tiny_data_dir, tmp_path, monkeypatch):
    from fashion_conv.fit import build_cli

    monkeypatch.chdir(tmp_path)
    trainer = build_cli(["--data.data_dir", str(tiny_data_dir), "--model.backbone", "mlp"]).trainer
    assert trainer.logger.log_dir == "lightning_logs/mlp/version_0" and (tmp_path / "lightning_logs" / "mlp" / "version_0").is_dir()


def test_the_run_folder_is_named_by_the_backbone_however_it_is_given():
    from types import SimpleNamespace

    from jsonargparse import Namespace

    from fashion_conv.runs import backbone_name as _backbone_name

    assert _backbone_name(SimpleNamespace(backbone="cnn5")) == "cnn5"
    assert _backbone_name(SimpleNamespace(backbone=Namespace(class_path="nets.TinyNet"))) == "nets.TinyNet"
    assert _backbone_name(SimpleNamespace(backbone={"class_path": "nets.TinyNet", "init_args": {}})) == "nets.TinyNet"


def test_help_names_the_command_and_says_what_it_does(capsys):
    from fashion_conv import fit

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: python -m fashion_conv.fit ")
    assert fit.__doc__.splitlines()[0] in " ".join(out.split())  # the module's first line, as argparse wraps it
