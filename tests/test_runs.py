"""Runs you can trust: one folder per run whatever the timing, Ctrl-C never reports a partial run, a resume
refuses a file or settings it cannot continue before writing anything, totals stay true, a full disk is one line.

Real processes, signals and a real full filesystem (a tiny tmpfs); the process-killing ones are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from fashion_conv.fit import main
from mounts import PYTHON, run_with_mounts

ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}


def fit_args(data_dir, root, *extra):
    return [
        "--data.data_dir", str(data_dir), "--data.val_size", "20", "--data.batch_size", "8",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.max_epochs", "1", "--model.backbone", "mlp", *extra,
    ]  # fmt: skip


def run_dir(root, version=0, name="mlp") -> Path:
    return Path(root) / "lightning_logs" / name / f"version_{version}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished 1-epoch mlp run: (data_dir, root)."""
    from conftest import tiny_arrays
    from fashion_conv.data.csvio import write_csv

    tmp = tmp_path_factory.mktemp("finished")
    for split, n, seed in (("train", 120, 1), ("test", 40, 2)):
        write_csv(tmp / "data" / "processed" / f"fashion-mnist-{split}.csv", *tiny_arrays(n, seed))
    assert main(fit_args(tmp / "data", tmp / "runs")) == 0
    return tmp / "data", tmp / "runs"


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("other backbone", ["--model.backbone", "cnn5"], "holds a 'mlp' backbone, but --model.backbone is 'cnn5'"),
        ("model.pth", [], "is a model.pth (weights only); --ckpt_path needs a training checkpoint"),
        ("changed lr", ["--model.lr", "0.01"], "was trained with --model.lr 0.001 (now 0.01); a resumed run keeps its settings"),
        ("changed batch size", ["--data.batch_size", "16", "--model.lr_schedule", "cosine"],
         "--model.lr_schedule 'none' (now 'cosine'), --data.batch_size 8 (now 16)"),
        ("changed seed", ["--seed_everything", "7"], "was trained with --seed_everything 42 (now 7)"),  # from the run's config.yaml
        ("weights only", [], "is not a training checkpoint; --ckpt_path needs a training checkpoint"),
        ("not ours", [], "not a FashionClassifier checkpoint (no backbone in its hyper_parameters)"),
    ],
)  # fmt: skip
def test_a_checkpoint_this_run_cannot_continue_is_refused_before_anything_is_written(finished_run, case, extra, message, capsys, tmp_path):
    data, root = finished_run
    before = snapshot(root)
    last = run_dir(root) / ("model.pth" if case == "model.pth" else "checkpoints/last.ckpt")
    if case in ("weights only", "not ours"):  # a Lightning checkpoint without the loops' state, or without our hyperparameters
        drop = "loops" if case == "weights only" else "hyper_parameters"
        full = torch.load(last, weights_only=True)
        last = tmp_path / "checkpoints" / "stripped.ckpt"
        last.parent.mkdir()
        torch.save({k: v for k, v in full.items() if k != drop}, last)
    for ckpt in (str(last), "last"):
        if ckpt == "last" and case in ("other backbone", "model.pth", "weights only", "not ours"):
            continue  # 'last' looks under the requested backbone's folder only
        assert main(fit_args(data, root, "--ckpt_path", ckpt, *extra)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {last}: ") and message in err, err  # the file, then the problem
    assert snapshot(root) == before  # config.yaml untouched, no new version folder
    assert [p.name for p in root.rglob("version_*")] == ["version_0"]


def test_a_checkpoint_without_a_data_option_resumes_with_the_value_asked_for(finished_run, tmp_path, capsys):
    """A checkpoint whose data hyperparameters lack an option (a data module that did not have it) compares as the
    value asked for: it does not block a resume."""
    data, root = finished_run
    full = torch.load(run_dir(root) / "checkpoints" / "last.ckpt", weights_only=True)
    old = tmp_path / "checkpoints" / "old.ckpt"
    old.parent.mkdir()
    dm = {k: v for k, v in full["datamodule_hyper_parameters"].items() if k != "random_shift"}
    torch.save({**full, "datamodule_hyper_parameters": dm}, old)
    capsys.readouterr()
    assert main(fit_args(data, tmp_path, "--ckpt_path", str(old), "--data.random_shift", "2")) == 0
    assert "was trained with" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "schedule, extra, differ",
    [
        ("cosine", ["--model.lr_schedule", "cosine", "--trainer.max_epochs", "3"], "--trainer.max_epochs 1 (now 3)"),  # laid out for 1
        (None, ["--trainer.max_epochs", "3"], "--model.lr_schedule None (now 'none')"),  # no schedule key: max_epochs is free
    ],
)
def test_a_scheduled_run_resumes_only_with_its_max_epochs(finished_run, tmp_path, capsys, schedule, extra, differ):
    data, root = finished_run
    full = torch.load(run_dir(root) / "checkpoints" / "last.ckpt", weights_only=True)
    hp = {k: v for k, v in full["hyper_parameters"].items() if k != "lr_schedule"}
    if schedule:
        hp["lr_schedule"] = schedule
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({**full, "hyper_parameters": hp}, ckpt)
    (tmp_path / "run" / "config.yaml").write_bytes((run_dir(root) / "config.yaml").read_bytes())  # max_epochs: 1
    capsys.readouterr()
    assert main(fit_args(data, tmp_path, "--ckpt_path", str(ckpt), *extra)) == 1
    assert capsys.readouterr().err == (
        f"error: {ckpt}: was trained with {differ}; a resumed run keeps its settings, so drop the changed options, "
        "or start a fresh run without --ckpt_path\n"
    )


def test_ckpt_path_last_on_a_finished_run_keeps_its_totals(finished_run, tmp_path):
    data, _ = finished_run
    root = work = tmp_path / "runs"
    assert main(fit_args(data, root)) == 0
    metrics = json.loads((run_dir(root) / "metrics.json").read_text())
    ckpt = torch.load(run_dir(root) / "checkpoints" / "last.ckpt", weights_only=True)
    recorded = ckpt["callbacks"]["GracefulStop"]["train_seconds"]
    assert 0 < recorded <= metrics["train_seconds"] + 0.01
    assert main(fit_args(data, work, "--ckpt_path", "last")) == 0  # a re-test only: nothing left to train
    again = json.loads((run_dir(work) / "metrics.json").read_text())
    assert again["train_seconds"] == round(recorded, 2) and again["epochs"] == metrics["epochs"] == 1
    assert again["test_acc"] == metrics["test_acc"]
    assert main(fit_args(data, work, "--ckpt_path", "last", "--trainer.max_epochs", "2")) == 0  # one more epoch
    longer = json.loads((run_dir(work) / "metrics.json").read_text())
    assert longer["epochs"] == 2 and longer["train_seconds"] > again["train_seconds"]
    assert hparams_epochs(run_dir(work)) == [2]  # TensorBoard shows the first entry only: the earlier ones are gone


def hparams_epochs(run: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = []
    for events in sorted(run.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    found.append(data.session_start_info.hparams["epochs"].number_value)
    return found


def test_sigterm_during_training_reaches_the_checkpointing_handler(tiny_data_dir, tmp_path):
    """Lightning wraps the SIGTERM handler at fit start with one that stops after the batch, without a mid-epoch
    checkpoint; while training, GracefulStop's own handler must be the one in force."""
    record = tmp_path / "handler"
    args = fit_args(tiny_data_dir, tmp_path / "runs", "--trainer.callbacks+=nets.RecordSigterm", f"--trainer.callbacks.path={record}")
    sys.path.insert(0, str(REPO / "tests"))
    assert main(args) == 0
    assert record.read_text() == "GracefulStop._on_signal"


def start_gated(args: list[str], gate: Path, cwd: Path) -> subprocess.Popen:
    """A fit process that imports everything, then waits for ``gate`` to exist, so several start at the same moment."""
    code = (
        "import os, sys, time, pathlib\n"
        "from fashion_conv.fit import main\n"
        "gate = pathlib.Path(sys.argv[1])\n"
        "gate.with_name(f'ready-{os.getpid()}').touch()\n"
        "while not gate.exists(): time.sleep(0.001)\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    return subprocess.Popen([PYTHON, "-c", code, str(gate), *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_runs_started_together_get_their_own_folders(tiny_data_dir, tmp_path):
    gate = tmp_path / "go"
    procs = [start_gated(fit_args(tiny_data_dir, tmp_path / "runs", "--seed_everything", str(s)), gate, tmp_path) for s in (0, 1, 2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3:  # all three are past their imports and waiting
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    gate.touch()
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    runs = sorted((tmp_path / "runs" / "lightning_logs" / "mlp").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1", "version_2"]
    seeds, writers = set(), set()
    for run in runs:  # everything in a folder comes from one run
        config = yaml.safe_load((run / "config.yaml").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert config["seed_everything"] == metrics["seed"] and metrics["run_dir"] == str(run)
        pids = {p.name.split(".")[-2] for p in run.glob("events.out.tfevents.*")}  # events.out.tfevents.TIME.HOST.PID.N
        assert len(pids) == 1
        assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
        seeds.add(metrics["seed"])
        writers |= pids
    assert seeds == {0, 1, 2} and len(writers) == 3


@pytest.mark.slow
def test_ctrl_c_mid_epoch_checkpoints_and_reports_nothing(tiny_data_dir, tmp_path):
    marker = tmp_path / "paused"
    pause = ["--trainer.callbacks+=nets.PauseAt", "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=1",  # steps 8-12
             f"--trainer.callbacks.marker={marker}", "--trainer.callbacks.seconds=3"]  # fmt: skip
    args = fit_args(tiny_data_dir, tmp_path / "runs", "--trainer.max_epochs", "2", *pause)
    proc = subprocess.Popen([PYTHON, "-m", "fashion_conv.fit", *args], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert f"Stopped by SIGINT; {run_dir(tmp_path / 'runs')}/checkpoints/last.ckpt is saved: resume with --ckpt_path last." in out
    assert "Traceback" not in out and "run summary" not in out
    run = run_dir(tmp_path / "runs")
    assert not (run / "metrics.json").exists() and not (run / "model.pth").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["callbacks"]["GracefulStop"]["mid_epoch"][0] == 1
    assert main(fit_args(tiny_data_dir, tmp_path / "runs", "--trainer.max_epochs", "2", "--ckpt_path", "last")) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_a_signal_while_testing_reports_nothing(tiny_data_dir, tmp_path):
    """SIGTERM during the final test: the trained epochs are in last.ckpt; no metrics.json for an untested run."""
    marker = tmp_path / "testing"
    args = fit_args(tiny_data_dir, tmp_path / "runs", "--data.eval_batch_size", "8", "--trainer.callbacks+=nets.PauseInTest",
                    f"--trainer.callbacks.marker={marker}")  # fmt: skip
    proc = subprocess.Popen([PYTHON, "-m", "fashion_conv.fit", *args], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "Stopped by SIGTERM;" in out and "Traceback" not in out and "run summary" not in out
    run = run_dir(tmp_path / "runs")
    assert not (run / "metrics.json").exists() and not (run / "model.pth").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0  # the one epoch, finished
    assert main(fit_args(tiny_data_dir, tmp_path / "runs", "--ckpt_path", "last")) == 0  # resuming tests it
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_a_full_disk_is_one_error_line_and_loses_nothing(tiny_data_dir, tmp_path):
    """The run folder on a real 900 KB tmpfs: the first checkpoint fits, the second does not."""
    runs = tmp_path / "runs"
    runs.mkdir()
    check = (
        "import sys, torch, pathlib\n"
        "files = sorted(pathlib.Path(sys.argv[1]).rglob('*.ckpt'))\n"
        "print('complete:', [torch.load(f, weights_only=True)['epoch'] for f in files], len(list(pathlib.Path(sys.argv[1]).rglob('.*.tmp'))))\n"
    )
    fit = [PYTHON, "-m", "fashion_conv.fit", *fit_args(tiny_data_dir, runs, "--model.backbone", "cnn5", "--trainer.max_epochs", "3")]
    script = ["sh", "-c", f'"$@"; echo "status $?"; {PYTHON} -c "{check}" {runs}', "sh", *fit]
    out = run_with_mounts([f"mount -t tmpfs -o size=900k tmpfs {runs}"], script, cwd=tmp_path, env=ENV, timeout=300)
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1, out.stderr[-3000:]
    assert errors[0].startswith(f"error: {run_dir(runs, name='cnn5')}/checkpoints/")
    assert "cannot write it (No space left on device); nothing was lost" in errors[0]
    assert "status 1" in out.stdout
    assert "complete: [0] 0" in out.stdout  # the checkpoint written before is whole, no temporary file is left
