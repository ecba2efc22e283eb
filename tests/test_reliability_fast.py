"""Fast, in-process twins of test_reliability.py's slow tests: the mid-epoch resume offset, the SIGTERM handler and
atomic writes, on tiny data in seconds, so ``pytest -m "not slow"`` warns about them too."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from fashion_conv.utils.atomic import atomic_path, atomic_write_text
from fashion_conv.callbacks.checkpoints import AtomicCheckpointIO
from fashion_conv.data.datamodule import EpochShuffle
from fashion_conv.fit import main

STEPS_PER_EPOCH = 13  # 100 training images in batches of 8


def fit_args(data_dir, root, *extra):
    return [
        "--data.data_dir", str(data_dir), "--data.val_size", "20", "--data.batch_size", "8",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.max_epochs", "2", "--model.backbone", "mlp",
        "--model.backbone_kwargs", '{"hidden": 8}', *extra,
    ]  # fmt: skip


def last_checkpoint(root) -> dict:
    return torch.load(Path(root) / "lightning_logs/mlp/version_0/checkpoints/last.ckpt", weights_only=True)


def test_epoch_shuffle_resumes_at_the_offset_of_that_epoch_once():
    sampler = EpochShuffle(50, seed=3)
    sampler.set_epoch(1)
    full = list(sampler)
    assert sorted(full) == list(range(50)) and full != list(range(50))
    sampler.resume_at(1, 16)
    assert list(sampler) == full[16:]  # the rest of the interrupted epoch, exactly
    assert list(sampler) == full  # and only that once
    sampler.resume_at(1, 16)
    sampler.set_epoch(2)
    assert sorted(list(sampler)) == list(range(50)) and len(list(sampler)) == 50  # another epoch is not cut
    # The order is a documented function of (seed, epoch), so published results stay reproducible across versions.
    fresh = EpochShuffle(50, seed=3)
    for epoch in (0, 1, 2):
        fresh.set_epoch(epoch)
        assert list(fresh) == torch.randperm(50, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch)).tolist()
    assert list(EpochShuffle(50, seed=3)) == torch.randperm(50, generator=torch.Generator().manual_seed(3 * 1_000_003)).tolist()
    big = 2**64 - 59  # torch.initial_seed() without seed_everything is any 64-bit number
    expected = torch.randperm(50, generator=torch.Generator().manual_seed((big * 1_000_003) % 2**63)).tolist()
    assert list(EpochShuffle(50, seed=big)) == expected


def test_sigterm_mid_epoch_saves_then_resume_matches_an_uninterrupted_run(tiny_data_dir, tmp_path):
    assert main(fit_args(tiny_data_dir, tmp_path / "ref")) == 0
    reference = last_checkpoint(tmp_path / "ref")
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # were the handler missing, the signal is ignored, not fatal
    try:
        signal_at = ["--trainer.callbacks+=nets.SignalAt", "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=4"]
        assert main(fit_args(tiny_data_dir, tmp_path / "run", *signal_at)) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the previous handler is back
    finally:
        signal.signal(signal.SIGTERM, before)
    stopped = last_checkpoint(tmp_path / "run")
    # SignalAt's hook runs before GracefulStop's: the checkpoint is written before step 4 of epoch 1 ran.
    assert (stopped["epoch"], stopped["global_step"]) == (1, STEPS_PER_EPOCH + 4)
    state = stopped["callbacks"]["GracefulStop"]
    assert state["mid_epoch"] == [1, 4] and set(state) == {"mid_epoch", "train_seconds"} and state["train_seconds"] > 0
    assert main(fit_args(tiny_data_dir, tmp_path / "run", "--ckpt_path", "last")) == 0
    resumed = last_checkpoint(tmp_path / "run")
    assert resumed["global_step"] == reference["global_step"] == 2 * STEPS_PER_EPOCH
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key  # the skipped batches are exactly those already done


def test_atomic_path_keeps_the_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target  # same folder: the final rename is atomic
            tmp.write_text("half a fi")
            raise KeyboardInterrupt  # the process is stopped mid-write
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_checkpoint_io_keeps_the_old_checkpoint_when_a_save_dies(tmp_path, monkeypatch):
    import lightning.fabric.plugins.io.torch_io as torch_io

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def dying_write(checkpoint, filepath):
        Path(filepath).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(TypeError, match="storage_options"):  # passed on: Lightning's torch IO refuses them
        io.save_checkpoint({"step": 2}, path, storage_options={"compress": True})
    monkeypatch.setattr(torch_io, "_atomic_save", dying_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_sigterm_checkpoint_goes_where_the_last_checkpoint_callback_writes(tmp_path):
    from lightning import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fashion_conv.callbacks.checkpoints import GracefulStop

    best = ModelCheckpoint(dirpath=tmp_path / "best", monitor="val/acc", mode="max")
    last = ModelCheckpoint(dirpath=tmp_path / "last", filename="last")
    trainer = Trainer(default_root_dir=tmp_path / "root", callbacks=[best, last], logger=False)
    assert GracefulStop.last_path(trainer) == tmp_path / "last" / "last.ckpt"
    no_dirpath = Trainer(default_root_dir=tmp_path / "root", callbacks=[ModelCheckpoint(filename="last")], logger=False)
    assert GracefulStop.last_path(no_dirpath) == tmp_path / "root" / "last.ckpt"  # dirpath is set only once fit starts
    none = Trainer(default_root_dir=tmp_path / "root", enable_checkpointing=False, logger=False)
    assert GracefulStop.last_path(none) == tmp_path / "root" / "last.ckpt"


def test_sigterm_handler_only_in_a_single_process_main_thread():
    import threading
    from types import SimpleNamespace

    from fashion_conv.callbacks.checkpoints import GracefulStop

    before = signal.getsignal(signal.SIGTERM)
    GracefulStop().on_train_start(SimpleNamespace(world_size=2), None)  # DDP: Lightning's own handling stays
    assert signal.getsignal(signal.SIGTERM) is before
    errors = []
    thread = threading.Thread(target=lambda: _call_collecting(errors, GracefulStop().on_train_start, SimpleNamespace(world_size=1), None))
    thread.start()
    thread.join()
    assert errors == [] and signal.getsignal(signal.SIGTERM) is before  # signal.signal() is main-thread only
    stop = GracefulStop()
    stop.on_train_start(SimpleNamespace(world_size=1), None)
    try:
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == stop._on_signal
    finally:
        stop.on_train_end(None, None)
    assert signal.getsignal(signal.SIGTERM) is before
    stop.on_exception(None, None, RuntimeError("after the end"))  # restoring twice is harmless
    assert signal.getsignal(signal.SIGTERM) is before


def _call_collecting(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test asserts there is none
        errors.append(exc)


def test_mid_epoch_resume_without_our_sampler_is_one_clear_error():
    from types import SimpleNamespace

    from fashion_conv.callbacks.checkpoints import GracefulStop
    from fashion_conv.utils.errors import FashionConvError

    stop = GracefulStop()
    stop.load_state_dict({"mid_epoch": [1, 4]})
    with pytest.raises(FashionConvError) as info:
        stop.on_train_start(SimpleNamespace(world_size=2, train_dataloader=[]), None)
    assert str(info.value) == "this checkpoint was written mid-epoch; resuming it needs FashionMNISTDataModule's sampler"


def test_a_mid_epoch_checkpoint_moves_the_sampler_once_by_the_batches_done():
    from types import SimpleNamespace

    from fashion_conv.callbacks.checkpoints import GracefulStop

    stop, sampler = GracefulStop(), EpochShuffle(50, seed=0)
    assert stop.state_dict() == {"mid_epoch": None, "train_seconds": 0.0}  # a checkpoint at an epoch's end resumes at the next epoch
    stop.load_state_dict({"mid_epoch": [1, 4]})
    trainer = SimpleNamespace(world_size=2, train_dataloader=SimpleNamespace(sampler=sampler, batch_size=8))
    stop.on_train_start(trainer, None)
    assert sampler._resume == (1, 32)  # 4 batches of 8 done
    sampler._resume = None
    stop.on_train_start(trainer, None)  # a later fit with the same callback starts its epoch from the beginning
    assert sampler._resume is None


def test_a_full_disk_is_one_clear_error_and_the_old_file_stays(tmp_path):
    import errno

    from fashion_conv.utils.atomic import WriteError

    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(WriteError) as info:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.target == target and isinstance(info.value, OSError)
    assert str(info.value) == f"{target}: cannot write it (No space left on device); nothing was lost: any earlier metrics.json is intact"
    with pytest.raises(WriteError, match=r"cannot write it \(PytorchStreamWriter failed writing file data/0: file write failed\);"):
        with atomic_path(target):  # torch.save on a full disk: the first line of its message is kept
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed\nException raised from ...")
    for other in (OSError(errno.ECONNRESET, "Connection reset"), RuntimeError("CUDA out of memory")):  # not the disk: as raised
        with pytest.raises(type(other)) as info:
            with atomic_path(target):
                raise other
        assert info.value is other
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_catch_signals_installs_once_in_a_single_process_and_restores():
    from types import SimpleNamespace

    from fashion_conv.callbacks.checkpoints import GracefulStop

    before = signal.getsignal(signal.SIGTERM)
    GracefulStop().restore_signals()  # nothing caught: nothing to restore, no error
    assert not GracefulStop().catch_signals(SimpleNamespace(world_size=2))  # DDP: Lightning's handling stays
    assert signal.getsignal(signal.SIGTERM) is before
    stop = GracefulStop()
    try:
        assert stop.catch_signals(SimpleNamespace(world_size=1))
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == stop._on_signal
        assert not stop.catch_signals(SimpleNamespace(world_size=1))  # already caught: the saved handlers stay the first ones
    finally:
        stop.restore_signals()
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_training_clock_runs_between_start_and_end_and_carries_across_resumes(monkeypatch):
    from types import SimpleNamespace

    import fashion_conv.callbacks.checkpoints as checkpoints

    now = [100.0]
    monkeypatch.setattr(checkpoints.time, "perf_counter", lambda: now[0])
    stop, trainer = checkpoints.GracefulStop(), SimpleNamespace(world_size=2)  # world_size 2: no signal handlers here
    stop.load_state_dict({"mid_epoch": None, "train_seconds": 5.0})  # a resumed run: 5 s before this process
    assert stop.train_seconds() == 5.0
    stop.on_train_start(trainer, None)
    now[0] = 102.5
    assert stop.train_seconds() == 7.5
    stop.on_train_end(trainer, None)
    now[0] = 110.0
    assert stop.train_seconds() == 7.5 and stop.state_dict() == {"mid_epoch": None, "train_seconds": 7.5}  # stopped at the end
    stop.setup(trainer, None, "test")
    assert stop.train_seconds() == 7.5  # testing does not reset it
    stop.setup(trainer, None, "fit")
    assert stop.train_seconds() == 0.0  # a new fit starts from 0 (a resume's total comes from load_state_dict, after setup)
    stop.load_state_dict({"mid_epoch": [1, 4]})  # a checkpoint written before train_seconds existed
    assert stop.train_seconds() == 0.0


def test_a_signal_saves_a_full_checkpoint_before_the_next_batch(tmp_path):
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from fashion_conv.callbacks.checkpoints import GracefulStop

    saved = []
    trainer = SimpleNamespace(current_epoch=1, checkpoint_callbacks=[], default_root_dir=tmp_path,
                              save_checkpoint=lambda path, **kwargs: saved.append((path, kwargs)))  # fmt: skip
    stop = GracefulStop()
    stop.on_train_batch_start(trainer, None, None, 3)
    assert saved == [] and not stop.requested
    stop._on_signal(signal.SIGTERM, None)
    with pytest.raises(SIGTERMException):
        stop.on_train_batch_start(trainer, None, None, 4)
    assert saved == [(tmp_path / "last.ckpt", {"weights_only": False})] and stop.state_dict()["mid_epoch"] == [1, 4]


def test_best_ckpt_is_rank_0s_copy_of_the_best_checkpoint_only(tmp_path):
    from types import SimpleNamespace

    from fashion_conv.callbacks.checkpoints import BestCheckpoint

    def best(name: str, score: float) -> None:
        callback.best_model_path, callback.best_model_score = str(tmp_path / name), torch.tensor(score)
        (tmp_path / name).write_bytes(f"{name} {score}".encode())

    rank = {r: SimpleNamespace(is_global_zero=r == 0) for r in (0, 1)}
    callback = BestCheckpoint(dirpath=tmp_path)
    callback.copy_best(rank[0])  # no best yet: nothing to copy
    assert not (tmp_path / "best.ckpt").exists()
    best("best-epoch=1.ckpt", 0.5)
    callback.copy_best(rank[1])  # another DDP rank: rank 0 writes the copy
    assert not (tmp_path / "best.ckpt").exists()
    callback.copy_best(rank[0])
    assert (tmp_path / "best.ckpt").read_bytes() == b"best-epoch=1.ckpt 0.5"
    (tmp_path / "best-epoch=1.ckpt").write_bytes(b"rewritten")  # the same best again: not copied again
    callback.copy_best(rank[0])
    assert (tmp_path / "best.ckpt").read_bytes() == b"best-epoch=1.ckpt 0.5"
    best("best-epoch=1.ckpt", 0.75)  # a new best under the same name (a filename without the metric)
    callback.copy_best(rank[0])
    assert (tmp_path / "best.ckpt").read_bytes() == b"best-epoch=1.ckpt 0.75"
    best("best-epoch=3.ckpt", 0.8)
    callback.copy_best(rank[0])
    assert (tmp_path / "best.ckpt").read_bytes() == b"best-epoch=3.ckpt 0.8"

