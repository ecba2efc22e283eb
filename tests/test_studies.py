"""Studies spread over worker processes and Ray: the sequential numbers, resume after SIGTERM, failures by name."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fashion_conv.data.csvio import write_csv
from fashion_conv.research.experiments.cli import main as experiments
from fashion_conv.research.ingredients import main as ingredients
from conftest import REPO, tiny_arrays

NUMBERS = ["variant", "seed", "params", "train_images", "epochs", "best_epoch", "val_acc", "test_acc", "test_loss", "shift_0", "shift_1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("study") / "data"
    for split, n, seed in (("train", 120, 1), ("test", 40, 2)):
        labels, images = tiny_arrays(n, seed)
        write_csv(data / "processed" / f"fashion-mnist-{split}.csv", labels, images)
    return data


def plan_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """A tiny plan: mlp, cnn, cnn5 (with the shift probe), 2 seeds, 1 epoch each; 6 runs."""
    return ["--experiments", "translation", "--preset", "quick", "--data-dir", str(data_dir), "--out", str(out / "report"),
            "--logs-dir", str(out / "runs"), "--seeds", "2", "--epochs", "1", "--train-size", "60", "--val-size", "20",
            "--test-size", "30", "--max-shift", "1", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def sequential(data_dir, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("sequential")
    assert experiments(plan_args(data_dir, out)) == 0
    return pd.read_csv(out / "report" / "results.csv")


def test_two_worker_processes_give_the_sequential_numbers(data_dir, sequential, tmp_path, capsys):
    assert experiments(plan_args(data_dir, tmp_path, "--workers", "2")) == 0
    out = capsys.readouterr().out
    assert "on 2 worker processes (1 thread each)" in out and "[6/6]" in out and "ETA" in out and "running" in out
    parallel = pd.read_csv(tmp_path / "report" / "results.csv")
    assert len(parallel) == 6 and parallel[NUMBERS].equals(sequential[NUMBERS])
    run = tmp_path / "runs" / "translation" / "cnn-seed1"  # a normal fit run folder
    assert {"metrics.json", "model.pth", "config.yaml", "study.json"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "metrics.json").read_text())["test_acc"] == parallel.loc[3, "test_acc"]
    assert list((run / "checkpoints").glob("best-*.ckpt")) and list(run.glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_local_ray_instance_gives_the_sequential_numbers(data_dir, sequential, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert experiments(plan_args(data_dir, tmp_path, "--ray-address", "auto")) == 0
    finally:
        ray.shutdown()
    on_ray = pd.read_csv(tmp_path / "report" / "results.csv")
    assert on_ray[NUMBERS].equals(sequential[NUMBERS])


@pytest.mark.slow
def test_a_study_stopped_by_sigterm_continues_without_retraining(data_dir, sequential, tmp_path):
    command = [sys.executable, "-m", "fashion_conv.research.experiments", *plan_args(data_dir, tmp_path)]
    study = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in study.stdout:  # wait until two runs are finished, then stop it mid-study
        if line.startswith("[2/6]"):
            break
    study.send_signal(signal.SIGTERM)
    _, err = study.communicate(timeout=120)
    assert study.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("Stopped by SIGTERM; finished runs are kept: run `python -m fashion_conv.research.experiments")
    finished = sorted((tmp_path / "runs").glob("*/*/study.json"))
    assert 2 <= len(finished) < 6
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(finished)} of 6 runs already finished; {6 - len(finished)} to run" in again.stdout
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())  # not trained again
    resumed = pd.read_csv(tmp_path / "report" / "results.csv")
    assert resumed[NUMBERS].equals(sequential[NUMBERS])


def test_a_failing_run_is_retried_once_then_reported_by_name(data_dir, tmp_path, capsys):
    # --model.backbone_kwargs hidden=8 fits mlp but not cnn: the notebook row fails, in a worker process, twice.
    argv = ["--rows", "notebook", "mlp-notebook", "--seeds", "0", "--data-dir", str(data_dir), "--runs-dir",
            str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--workers", "2", "--data.val_size", "20",
            "--trainer.max_epochs", "1", "--model.backbone_kwargs", '{"hidden": 8}']  # fmt: skip
    assert ingredients(argv) == 1
    captured = capsys.readouterr()
    assert "run notebook seed 0 failed (ArgumentValueError: backbone:" in captured.out and "retrying once" in captured.out
    assert "error: 1 runs failed twice and are missing from the report: notebook seed 0" in captured.err
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Missing runs (failed twice, see the command's output): notebook seed 0." in report
    assert "| mlp-notebook |" in report and "| notebook |" not in report
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(results["row"]) == ["mlp-notebook"]


def test_bad_spread_options_fail_with_one_line(capsys):
    assert experiments(["--workers", "0"]) == 1
    assert capsys.readouterr().err.startswith("error: --workers and --threads-per-run must be at least 1")


def test_num_classes_reaches_the_backbone_and_class_names_stay_importable():
    import torch

    import fashion_conv
    from fashion_conv import FashionClassifier
    from fashion_conv.data.classes import CLASS_NAMES
    from fashion_conv.data.csvio import CLASS_NAMES as OLD_HOME
    from fashion_conv.utils.errors import FashionConvError

    for backbone in ("mlp", "cnn", "cnn5", "convnet"):
        assert FashionClassifier(backbone, num_classes=7)(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    assert FashionClassifier("nets.TinyNet")(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # no num_classes argument
    with pytest.raises(FashionConvError, match="contradicts num_classes=7"):
        FashionClassifier("cnn", backbone_kwargs={"num_classes": 5}, num_classes=7)
    assert fashion_conv.CLASS_NAMES is CLASS_NAMES is OLD_HOME and CLASS_NAMES[9] == "Ankle boot"
