"""Killed runs resume exactly, SIGTERM stops cleanly, same seed same run, unsafe or broken files are refused.

Processes here are really killed with signals; these tests are marked slow and CI runs them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from nets import Payload
from fashion_conv.models.backbones import load_backbone
from fashion_conv.data.csvio import read_csv
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.fit import main

pytestmark = pytest.mark.slow


def fit_args(data_dir, root, *extra):
    """A tiny cnn5 run: 13 batches of 8 an epoch."""
    return [
        "--data.data_dir", str(data_dir), "--data.val_size", "20", "--data.batch_size", "8",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.max_epochs", "3", "--model.backbone", "cnn5", *extra,
    ]  # fmt: skip


def run_dir(root, name="cnn5", version=0) -> Path:
    return Path(root) / "lightning_logs" / name / f"version_{version}"


def last_weights(root) -> dict:
    ckpt = torch.load(run_dir(root) / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["state_dict"], ckpt["global_step"], ckpt["epoch"]


def start(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}
    return subprocess.Popen([sys.executable, "-m", "fashion_conv.fit", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path.name}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def pause_at(epoch, batch, marker):
    return ["--trainer.callbacks+=nets.PauseAt", f"--trainer.callbacks.epoch={epoch}",
            f"--trainer.callbacks.batch={batch}", f"--trainer.callbacks.marker={marker}"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory, make_tiny_data):
    """An uninterrupted 3-epoch run: the weights a resumed run must match bit for bit."""
    tmp = tmp_path_factory.mktemp("ref")
    make_tiny_data(tmp / "data")
    assert main(fit_args(tmp / "data", tmp / "runs")) == 0
    return tmp / "data", last_weights(tmp / "runs")


def assert_same_run(root, reference_weights):
    state, step, epoch = last_weights(root)
    ref_state, ref_step, ref_epoch = reference_weights
    assert (step, epoch) == (ref_step, ref_epoch)  # every epoch trained exactly once: 3 x 13 steps
    assert state.keys() == ref_state.keys()
    for key in state:
        assert torch.equal(state[key], ref_state[key]), key


def test_sigkill_mid_epoch_twice_then_resume_is_bit_exact(reference, tmp_path):
    data, ref = reference
    root = tmp_path / "runs"
    for epoch, batch in ((1, 5), (2, 3)):  # killed during epoch 2 of 3 (at batch 5), then during epoch 3
        marker = tmp_path / f"paused-{epoch}"
        proc = start(fit_args(data, root, "--ckpt_path", "last", *pause_at(epoch, batch, marker)), tmp_path)
        wait_for(marker, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    proc = start(fit_args(data, root, "--ckpt_path", "last"), tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert [p.name for p in (root / "lightning_logs" / "cnn5").iterdir()] == ["version_0"]
    assert_same_run(root, ref)


def test_sigterm_saves_and_exits_then_resumes_exactly(reference, tmp_path):
    data, ref = reference
    root = tmp_path / "runs"
    marker = tmp_path / "paused"
    proc = start(fit_args(data, root, *pause_at(1, 4, marker), "--trainer.callbacks.seconds=3"), tmp_path)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "Stopped by SIGTERM" in out and "Traceback" not in out
    assert last_weights(root)[1:] == (13 + 4, 1)  # saved before batch 4 of epoch 1 ran
    assert main(fit_args(data, root, "--ckpt_path", "last")) == 0
    assert_same_run(root, ref)


def test_same_seed_same_run_other_seed_other_run(reference, tmp_path):
    data, ref = reference
    assert main(fit_args(data, tmp_path / "a")) == 0
    assert_same_run(tmp_path / "a", ref)
    metrics = [json.loads((run_dir(tmp_path / r) / "metrics.json").read_text()) for r in ("a",)]
    assert main(fit_args(data, tmp_path / "b", "--seed_everything", "7")) == 0
    other, _, _ = last_weights(tmp_path / "b")
    assert not torch.equal(other["backbone.fc.1.weight"], ref[0]["backbone.fc.1.weight"])
    assert json.loads((run_dir(tmp_path / "b") / "metrics.json").read_text())["seed"] == 7
    assert metrics[0]["seed"] == 42


def test_pickled_code_is_refused_and_never_runs(reference, tmp_path, capsys):
    data, _ = reference
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, evil)
    assert main(fit_args(data, tmp_path, "--ckpt_path", str(evil))) == 1
    err = capsys.readouterr().err
    assert f"{evil}: refused: loading it would run Python code" in err and "Traceback" not in err
    torch.save(Payload(marker), tmp_path / "model.pth")
    with pytest.raises(FashionConvError, match="refused: loading it would run Python code"):
        load_backbone(tmp_path / "model.pth", "cnn5")
    assert not marker.exists()


def test_truncated_last_checkpoint_is_an_error_not_a_fresh_start(reference, tmp_path, capsys):
    data, _ = reference
    assert main(fit_args(data, tmp_path, "--trainer.max_epochs", "1")) == 0
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    assert main(fit_args(data, tmp_path, "--ckpt_path", "last")) == 1
    err = capsys.readouterr().err
    assert f"{last}: not a PyTorch weights file, or a damaged one" in err
    (run_dir(tmp_path) / "model.pth").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(FashionConvError, match="not a PyTorch weights file, or a damaged one"):
        load_backbone(run_dir(tmp_path) / "model.pth", "cnn5")


def test_ddp_two_processes_on_cpu_match_a_single_process_evaluation(tmp_path, make_tiny_data):
    data = make_tiny_data(tmp_path / "data")
    args = fit_args(data, tmp_path / "runs", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                    "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--data.eval_batch_size", "10")  # fmt: skip
    proc = start(args, tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert out.count("fashion_conv run summary") == 1  # printed by rank 0 only
    metrics = json.loads((run_dir(tmp_path / "runs") / "metrics.json").read_text())
    # The exported weights, evaluated in this single process, give the test accuracy the two processes reported.
    labels, images = read_csv(data / "processed" / "fashion-mnist-test.csv")
    net = load_backbone(run_dir(tmp_path / "runs") / "model.pth", "cnn5")
    with torch.no_grad():
        pred = net(torch.from_numpy(images).float().div(255).unsqueeze(1)).argmax(1)
    assert metrics["test_acc"] == pytest.approx((pred == torch.from_numpy(labels).long()).float().mean().item())


def test_ddp_prepares_the_data_once(tmp_path):
    from fashion_conv.data.idx import OFFICIAL, SYSTEM_DIR, candidates

    sources = [REPO / "data" / "raw", SYSTEM_DIR]
    found = {n: next((p for d in sources for p in candidates(d, n) if p.is_file()), None) for n in OFFICIAL}
    if None in found.values():
        pytest.skip("the official IDX files are not on this machine (run scripts/setup.sh)")
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    for path in found.values():
        (raw / path.name).symlink_to(path)
    args = ["--data.data_dir", str(tmp_path / "data"), "--model.backbone", "mlp", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
            "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    proc = start(args, tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert out.count("Preparing") == 1, out  # one conversion, though two processes trained
    assert (tmp_path / "data" / "processed" / "fashion-mnist-train.csv").stat().st_size > 100e6
