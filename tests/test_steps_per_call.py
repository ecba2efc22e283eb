"""Grouped calls (``--data.steps_per_call N``, fit's default: 16 batches a call) train exactly like one batch a call.

fit hands each ``training_step`` a list of batches so that Lightning's fixed cost a call is paid once per group. These
tests run the same tiny fit both ways and compare everything a user sees: the final weights, every TensorBoard scalar
at every step, metrics.json, a schedule's rates, augmentation, ``max_steps``, and a mid-epoch stop and resume.
"""

from __future__ import annotations

import json
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_conv.data.datamodule import BatchGroup, FashionMNISTDataModule
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.fit import default_steps_per_call, main
from fashion_conv.models.classifier import steps_per_call_conflicts


def fit_tiny(data, root, *extra: str) -> dict:
    """A tiny mlp fit; returns its metrics.json, every scalar as {tag: [(step, value)]} and the last checkpoint."""
    args = [
        "--data.data_dir", str(data), "--data.val_size", "20", "--data.batch_size", "8", "--data.eval_batch_size", "16",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "3",
        "--model.backbone", "mlp", "--model.backbone_kwargs", '{"hidden": 16}', "--model.lr", "0.01",
        "--explain_figures", "false", *extra,
    ]  # fmt: skip
    assert main(args) == 0
    (run,) = (root / "lightning_logs" / "mlp").glob("version_*")
    events = EventAccumulator(str(run))
    events.Reload()
    # By step: fit and test write separate event files, which the reader may take in either order.
    scalars = {tag: sorted(((e.step, e.value) for e in events.Scalars(tag)), key=lambda p: p[0]) for tag in events.Tags()["scalars"]}
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {"metrics": json.loads((run / "metrics.json").read_text()), "scalars": scalars, "last": last}


def assert_same_run(grouped: dict, single: dict) -> None:
    assert grouped["last"]["global_step"] == single["last"]["global_step"]
    for key, value in single["last"]["state_dict"].items():
        torch.testing.assert_close(grouped["last"]["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert grouped["scalars"].keys() == single["scalars"].keys()
    for tag, points in single["scalars"].items():
        assert [s for s, _ in grouped["scalars"][tag]] == [s for s, _ in points], tag  # the same steps
        assert [v for _, v in grouped["scalars"][tag]] == pytest.approx([v for _, v in points], rel=1e-4, abs=1e-6), tag
    g, s = grouped["metrics"], single["metrics"]
    assert (g["test_acc"], g["val_acc"], g["epochs"]) == (s["test_acc"], s["val_acc"], s["epochs"])
    assert g["test_loss"] == pytest.approx(s["test_loss"], rel=1e-5)


# 100 training rows in batches of 8: 13 a epoch (12 of 8, one of 4), all in one call of the default 16.
CASES = {
    "defaults": [],
    "onecycle+augment": ["--model.lr_schedule", "onecycle", "--data.random_shift", "2", "--data.hflip", "true"],
    "adamw+smoothing": ["--model.weight_decay", "0.01", "--model.label_smoothing", "0.1"],
    "bf16-mixed": ["--trainer.precision", "bf16-mixed"],  # backward and step outside autocast, as on one batch a call
}


@pytest.mark.parametrize("case", list(CASES))
def test_grouped_calls_train_and_log_exactly_like_one_batch_a_call(case, tmp_path, make_tiny_data):
    data = make_tiny_data(tmp_path / "data")
    grouped = fit_tiny(data, tmp_path / "grouped", *CASES[case])  # the default: 16 batches of 8 a call
    single = fit_tiny(data, tmp_path / "single", *CASES[case], "--data.steps_per_call", "1")
    assert_same_run(grouped, single)
    assert grouped["scalars"]["train/loss"][0][0] == 2  # step 2 is the 3rd: log_every_n_steps=3 counts steps, not calls
    assert (tmp_path / "grouped" / "lightning_logs" / "mlp" / "version_0" / "config.yaml").read_text().count(
        f"steps_per_call: {default_steps_per_call(8)}"
    ) == 1  # the resolved value is what the run folder records


def test_a_grouped_run_stopped_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path, make_tiny_data):
    data = make_tiny_data(tmp_path / "data")
    whole = fit_tiny(data, tmp_path / "whole", "--data.steps_per_call", "2")
    stop = ["--trainer.callbacks+=nets.SignalAt", "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=3",
            "--trainer.callbacks.signum", str(int(signal.SIGTERM))]  # fmt: skip
    args = [
        "--data.data_dir", str(data), "--data.val_size", "20", "--data.batch_size", "8", "--data.eval_batch_size", "16",
        "--trainer.default_root_dir", str(tmp_path / "parts"), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "3",
        "--model.backbone", "mlp", "--model.backbone_kwargs", '{"hidden": 16}', "--model.lr", "0.01",
        "--explain_figures", "false",
    ]  # fmt: skip
    assert main([*args, "--data.steps_per_call", "2", *stop]) == 143  # stopped before the 4th call of epoch 1
    last = tmp_path / "parts" / "lightning_logs" / "mlp" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 13 + 6
    assert main([*args, "--ckpt_path", "last"]) == 0  # left out, steps_per_call is the checkpoint's 2
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    for key, value in whole["last"]["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_a_resumed_run_keeps_its_grouping_and_refuses_another(tmp_path, make_tiny_data, capsys):
    data = make_tiny_data(tmp_path / "data")
    fit_tiny(data, tmp_path, "--trainer.max_epochs", "1")
    last = tmp_path / "lightning_logs" / "mlp" / "version_0" / "checkpoints" / "last.ckpt"
    args = ["--data.data_dir", str(data), "--data.val_size", "20", "--data.batch_size", "8", "--model.backbone", "mlp",
            "--model.backbone_kwargs", '{"hidden": 16}', "--model.lr", "0.01", "--trainer.default_root_dir", str(tmp_path),
            "--ckpt_path", str(last)]  # fmt: skip
    capsys.readouterr()
    assert main([*args, "--data.steps_per_call", "1"]) == 1
    assert "was trained with --data.steps_per_call 16 (now 1)" in capsys.readouterr().err


def test_fit_groups_16_batches_and_at_most_about_2048_images_a_call():
    assert [default_steps_per_call(b) for b in (8, 64, 128, 200, 256, 1024, 2048, 5000, 0)] == [16, 16, 16, 10, 8, 2, 1, 1, 16]


def test_settings_that_count_single_batches_fall_back_to_one_batch_a_call_or_are_refused(tmp_path, make_tiny_data, capsys):
    assert steps_per_call_conflicts({}) == []
    assert steps_per_call_conflicts({"limit_train_batches": 1.0, "val_check_interval": 1.0, "accumulate_grad_batches": 1}) == []
    assert steps_per_call_conflicts(
        {"gradient_clip_val": 0.5, "accumulate_grad_batches": 2, "limit_train_batches": 3, "val_check_interval": 0.5,
         "overfit_batches": 1, "fast_dev_run": True, "max_steps": 30}
    ) == ["gradient_clip_val", "accumulate_grad_batches", "limit_train_batches", "val_check_interval", "overfit_batches",
          "fast_dev_run", "max_steps"]  # fmt: skip
    assert steps_per_call_conflicts({"max_steps": -1, "gradient_clip_val": 0}) == []  # Lightning's "off" values
    assert steps_per_call_conflicts({"limit_train_batches": 1}) == ["limit_train_batches"]  # an int counts batches
    data = make_tiny_data(tmp_path / "data")
    clipped = fit_tiny(data, tmp_path / "a", "--trainer.gradient_clip_val", "0.5", "--trainer.max_epochs", "1")
    assert clipped["last"]["datamodule_hyper_parameters"]["steps_per_call"] == 1  # fell back: Lightning clips
    stopped = fit_tiny(data, tmp_path / "c", "--trainer.max_steps", "20")
    assert stopped["last"]["datamodule_hyper_parameters"]["steps_per_call"] == 1 and stopped["last"]["global_step"] == 20
    capsys.readouterr()
    with pytest.raises(AssertionError):
        fit_tiny(data, tmp_path / "b", "--trainer.gradient_clip_val", "0.5", "--data.steps_per_call", "4")
    err = capsys.readouterr().err
    assert "--data.steps_per_call 4 cannot run with --trainer.gradient_clip_val" in err and "Traceback" not in err


def test_the_datamodule_groups_the_same_batches_in_the_same_order(tiny_data_dir):
    def batches(group: int) -> list:
        dm = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=8, shuffle_seed=5, steps_per_call=group)
        dm.setup("fit")
        out = []
        for item in dm.train_dataloader():
            out += item if isinstance(item, BatchGroup) else [item]
        return out

    single, grouped = batches(1), batches(8)
    assert [len(y) for _, y in grouped] == [8] * 12 + [4]
    for (x1, y1), (x8, y8) in zip(single, grouped, strict=True):
        assert torch.equal(x1, x8) and torch.equal(y1, y8)
    with pytest.raises(FashionConvError, match="steps_per_call must be at least 1"):
        FashionMNISTDataModule(tiny_data_dir, steps_per_call=0)


def test_the_progress_bar_counts_batches_not_calls(tmp_path, make_tiny_data, capfd):
    data = make_tiny_data(tmp_path / "data")
    args = [
        "--data.data_dir", str(data), "--data.val_size", "20", "--data.batch_size", "8", "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(tmp_path), "--model.backbone", "mlp", "--model.backbone_kwargs", '{"hidden": 8}',
        "--explain_figures", "false", "--trainer.callbacks+=fashion_conv.progress.StepProgressBar",
        "--trainer.callbacks.refresh_rate=5", "--data.steps_per_call", "8",
    ]  # fmt: skip
    capfd.readouterr()
    assert main(args) == 0
    out, err = capfd.readouterr()  # Lightning draws its bar on stdout
    assert "smaller than the logging interval" not in err  # Lightning counts the 2 calls; 13 steps are what log
    frames = [part for line in out.splitlines() for part in line.split("\r")]
    counts = [part.split("|")[2].split("[")[0].strip() for part in frames if part.startswith("Epoch 0:") and part.count("|") >= 2]
    assert counts and counts[0] == "0/13" and counts[-1] == "13/13"  # 13 batches of 8, in 2 calls (8 + 5)
    assert "8/13" in counts and "5/13" not in counts  # redrawn where a call crossed a multiple of 5 steps


def test_a_grouping_datamodule_refuses_trainer_settings_that_count_single_batches(tiny_data_dir):
    import lightning as L

    from fashion_conv import FashionClassifier

    trainer = L.Trainer(max_epochs=1, gradient_clip_val=0.5, accumulate_grad_batches=2, limit_train_batches=3, val_check_interval=0.5,
                        overfit_batches=0.5, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(FashionConvError) as info:
        trainer.fit(FashionClassifier("mlp"), datamodule=FashionMNISTDataModule(tiny_data_dir, val_size=20, steps_per_call=4))
    assert str(info.value) == (
        "--data.steps_per_call 4 cannot run with --trainer.gradient_clip_val, --trainer.accumulate_grad_batches, "
        "--trainer.limit_train_batches, --trainer.val_check_interval, --trainer.overfit_batches: they count single batches; "
        "use --data.steps_per_call 1"
    )
    quick = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(FashionConvError, match=r"with --trainer.limit_train_batches, --trainer.fast_dev_run, --trainer.max_steps: they count"):
        quick.fit(FashionClassifier("mlp"), datamodule=FashionMNISTDataModule(tiny_data_dir, val_size=20, steps_per_call=4))


@pytest.mark.parametrize("where", ["callback", "module"])
@pytest.mark.parametrize("hook", ["on_before_backward", "on_after_backward", "on_before_optimizer_step", "backward"])
def test_grouped_steps_call_each_hook_that_a_callback_or_the_module_overrides(tiny_data_dir, where, hook):
    import lightning as L

    from fashion_conv import FashionClassifier

    if where == "callback" and hook == "backward":
        pytest.skip("backward is a LightningModule hook only")
    calls = []

    def record(self, *args, **kwargs):
        calls.append(hook)
        if hook == "backward":
            args[0].backward()  # the loss: what Lightning's own backward does

    callbacks = [type("Hooked", (L.Callback,), {hook: record})()] if where == "callback" else []
    model = (FashionClassifier if where == "callback" else type("Hooked", (FashionClassifier,), {hook: record}))("mlp", backbone_kwargs={"hidden": 8})
    trainer = L.Trainer(max_epochs=1, callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=10, steps_per_call=4))
    assert trainer.global_step == 10 and calls == [hook] * 10  # once a step, as with one batch a call


def _scaled_fp16():
    from lightning.pytorch.plugins.precision import MixedPrecision

    return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]}


@pytest.mark.parametrize(
    "trainer_kwargs, plain",
    [
        (lambda: {}, True),
        (lambda: {"precision": "bf16-mixed"}, True),  # autocast only: backward and step are plain
        (lambda: {"precision": "64-true"}, False),  # another plugin converts the module and batches
        (lambda: {"precision": "bf16-true"}, False),
        (_scaled_fp16, False),  # a gradient scaler scales the loss and unscales before the step
        (lambda: {"strategy": "ddp", "devices": 2}, False),  # DDP synchronises in its hooks
    ],
    ids=["32-true", "bf16-mixed", "64-true", "bf16-true", "fp16-scaler", "ddp"],
)
def test_grouped_steps_bypass_lightnings_hooks_only_where_they_would_do_nothing(trainer_kwargs, plain):
    from lightning import Trainer

    from fashion_conv import FashionClassifier

    model = FashionClassifier("mlp")
    model.trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **trainer_kwargs())
    assert model._plain_steps() is plain
    model.automatic_optimization = False  # grouped calls
    model.on_train_start()
    assert model._direct is plain
    model.automatic_optimization = True  # one batch a call: Lightning steps, never the module
    model.on_train_start()
    assert model._direct is False


def test_epoch_metrics_are_averaged_over_processes_under_ddp(tmp_path, make_tiny_data, monkeypatch):
    """What each epoch-level log asks of a DDP run (here one process, where the averages change nothing): losses
    averaged over processes (sync_dist), accuracies by torchmetrics, which gathers every process's counts."""
    from fashion_conv import FashionClassifier

    asked, log = {}, FashionClassifier.log

    def record(self, name, value, **kwargs):
        asked.setdefault(name, kwargs.get("sync_dist"))
        log(self, name, value, **kwargs)

    monkeypatch.setattr(FashionClassifier, "log", record)
    fit_tiny(make_tiny_data(tmp_path / "data"), tmp_path, "--trainer.max_epochs", "1")
    assert asked == {"train/loss": None, "train/acc": True, "train/loss_epoch": True, "val/loss": True, "val/acc": None,
                     "test/loss": True, "test/acc": None}  # fmt: skip


def test_lightnings_logging_interval_warning_is_dropped_only_for_grouped_calls(tmp_path, make_tiny_data):
    """Lightning warns when an epoch has fewer batches than log_every_n_steps, but counts calls; grouped calls log
    by optimizer step, so that warning is dropped for them (and kept for one batch a call)."""
    import warnings

    data = make_tiny_data(tmp_path / "data")
    for group, warned in (("1", True), ("2", False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_tiny(data, tmp_path / group, "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "50", "--data.steps_per_call", group)
        texts = [str(w.message) for w in caught]
        assert any("is smaller than the logging interval" in t for t in texts) is warned, (group, texts)


def test_setup_chooses_manual_steps_for_grouped_batches_and_refuses_conflicts(tiny_data_dir):
    from lightning import Trainer

    from fashion_conv import FashionClassifier

    for group, automatic in ((1, True), (2, False), (16, False)):
        model = FashionClassifier("mlp")
        model.trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
        model.trainer.datamodule = FashionMNISTDataModule(tiny_data_dir, steps_per_call=group)
        model.setup("fit")
        assert model.automatic_optimization is automatic, group
    model.trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, gradient_clip_val=1.0, accumulate_grad_batches=2)
    model.trainer.datamodule = FashionMNISTDataModule(tiny_data_dir, steps_per_call=2)
    with pytest.raises(FashionConvError) as info:
        model.setup("fit")
    assert str(info.value) == ("--data.steps_per_call 2 cannot run with --trainer.gradient_clip_val, --trainer.accumulate_grad_batches: "
                               "they count single batches; use --data.steps_per_call 1")  # fmt: skip


def test_fit_refuses_an_explicit_group_with_settings_that_count_single_batches(tmp_path, make_tiny_data, capsys):
    from types import SimpleNamespace

    from fashion_conv.fit import resolve_steps_per_call

    def resolved(steps_per_call, **trainer):
        config = SimpleNamespace(data=SimpleNamespace(steps_per_call=steps_per_call, batch_size=64), trainer=SimpleNamespace(**trainer))
        resolve_steps_per_call(config, None)
        return config.data.steps_per_call

    assert resolved(None) == 16 and resolved(None, gradient_clip_val=1.0) == 1 and resolved(1, gradient_clip_val=1.0) == 1
    with pytest.raises(FashionConvError) as info:
        resolved(2, gradient_clip_val=1.0, accumulate_grad_batches=2)
    assert str(info.value) == ("--data.steps_per_call 2 cannot run with --trainer.gradient_clip_val, --trainer.accumulate_grad_batches: "
                               "they count single batches; leave --data.steps_per_call out, or set it to 1")  # fmt: skip
