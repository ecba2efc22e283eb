"""Exact values: the split, every logged metric and the tested checkpoint, recomputed with plain PyTorch.

The CSV is read here with numpy (not csvio), the network is the backbone with the recorded weights, and the
losses and accuracies are computed without Lightning or torchmetrics; fashion_conv's numbers must match.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_conv import FashionMNISTDataModule, build_backbone
from fashion_conv.fit import main

N_TRAIN, N_VAL, EPOCHS = 100, 20, 5  # the tiny train CSV has 120 rows


def plain_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) int64 and pixels (N, 784) uint8 of a dataset CSV, read with numpy alone."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64)
    return table[:, 0], table[:, 1:].astype(np.uint8)


def row_keys(pixels: np.ndarray) -> list[bytes]:
    """One key per image: its 784 bytes (the tiny images are noise, so no two are alike)."""
    return [row.tobytes() for row in pixels.reshape(len(pixels), -1).astype(np.uint8)]


def test_splits_are_disjoint_and_cover_the_train_csv_exactly_once(tiny_data_dir):
    labels, pixels = plain_csv(tiny_data_dir / "processed" / "fashion-mnist-train.csv")
    csv_rows = [bytes([label]) + key for label, key in zip(labels, row_keys(pixels))]
    assert len(set(csv_rows)) == len(csv_rows) == 120

    def rows(dataset) -> list[bytes]:
        return [bytes([int(y)]) + key for y, key in zip(dataset.labels, row_keys(dataset.images.numpy()))]

    for split_seed in (0, 3):
        dm = FashionMNISTDataModule(tiny_data_dir, val_size=N_VAL, split_seed=split_seed)
        dm.setup("fit")
        train, val = rows(dm.train_set), rows(dm.val_set)
        assert len(val) == N_VAL and not set(train) & set(val)
        assert sorted(train + val) == sorted(csv_rows)  # every row once: in one split, with its own label
        small = FashionMNISTDataModule(tiny_data_dir, val_size=N_VAL, split_seed=split_seed, train_size=30)
        small.setup("fit")
        assert rows(small.val_set) == val  # a smaller training set leaves the validation split as it was
        assert rows(small.train_set) == train[:30]


# ---- one tiny fit, every number it logs recomputed ----

RUNS = {
    "plain": [],  # fit's defaults
    "smoothing+tta": ["--model.label_smoothing", "0.1", "--model.tta_hflip", "true"],  # the strong recipe's options
}


@pytest.fixture(scope="module", params=list(RUNS))
def recorded_run(request, tmp_path_factory, make_tiny_data):
    """A 5-epoch fit through the CLI, with a callback recording each step's batch and weights."""
    tmp = tmp_path_factory.mktemp(request.param.replace("+", "_").replace("-", "_"))
    data = make_tiny_data(tmp / "data")
    args = [
        "--data.data_dir", str(data), "--data.val_size", str(N_VAL), "--data.batch_size", "16", "--data.eval_batch_size", "8",
        "--trainer.default_root_dir", str(tmp), "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.max_epochs", str(EPOCHS), "--trainer.log_every_n_steps", "1", "--model.backbone", "mlp",
        "--model.backbone_kwargs", '{"hidden": 16}', "--model.lr", "0.01",
        "--trainer.callbacks+=nets.RecordSteps", f"--trainer.callbacks.path={tmp / 'record.pt'}", *RUNS[request.param],
    ]  # fmt: skip
    assert main(args) == 0
    run = tmp / "lightning_logs" / "mlp" / "version_0"
    events = EventAccumulator(str(run))
    events.Reload()
    scalars = {tag: [e.value for e in sorted(events.Scalars(tag), key=lambda e: e.step)] for tag in events.Tags()["scalars"]}
    record = torch.load(tmp / "record.pt", weights_only=True)
    return {
        "data": data, "run": run, "scalars": scalars, "record": record, "metrics": json.loads((run / "metrics.json").read_text()),
        "smoothing": 0.1 if "smoothing" in request.param else 0.0, "tta": "tta" in request.param,
    }  # fmt: skip


def net_with(weights: dict) -> torch.nn.Module:
    net = build_backbone("mlp", hidden=16)
    net.load_state_dict(weights)
    return net.eval()


def plain_logits(weights: dict, x: torch.Tensor, tta: bool) -> torch.Tensor:
    net = net_with(weights)
    with torch.no_grad():
        return (net(x) + net(x.flip(-1))) / 2 if tta else net(x)


def plain_eval(weights: dict, labels: np.ndarray, pixels: np.ndarray, tta: bool) -> tuple[float, float]:
    """(accuracy, mean cross-entropy without smoothing) of the backbone on uint8 pixels scaled to [0, 1]."""
    x = torch.from_numpy(pixels).float().div(255).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels)
    logits = plain_logits(weights, x, tta)
    return (logits.argmax(1) == y).double().mean().item(), F.cross_entropy(logits.double(), y).item()


def validation_rows(recorded_run) -> tuple[np.ndarray, np.ndarray]:
    """The train CSV's rows that no training step saw: the validation split, found without the DataModule."""
    labels, pixels = plain_csv(recorded_run["data"] / "processed" / "fashion-mnist-train.csv")
    seen = set()
    for step in recorded_run["record"]["steps"]:
        seen |= set(row_keys((step["x"] * 255).round().to(torch.uint8).numpy()))
    unseen = np.array([key not in seen for key in row_keys(pixels)])
    return labels[unseen], pixels[unseen]


def check_each_epoch_trains_on_the_training_split_once_with_its_labels(recorded_run):
    labels, pixels = plain_csv(recorded_run["data"] / "processed" / "fashion-mnist-train.csv")
    label_of = dict(zip(row_keys(pixels), labels.tolist()))
    val_labels, _ = validation_rows(recorded_run)
    assert len(val_labels) == N_VAL
    for epoch in range(EPOCHS):
        steps = [s for s in recorded_run["record"]["steps"] if s["epoch"] == epoch]
        x = torch.cat([s["x"] for s in steps])
        keys = row_keys((x * 255).round().to(torch.uint8).numpy())
        assert len(keys) == len(set(keys)) == N_TRAIN  # every training image once per epoch
        assert torch.equal(x, (x * 255).round() / 255)  # pixels are exactly byte / 255
        assert torch.cat([s["y"] for s in steps]).tolist() == [label_of[k] for k in keys]


def check_training_metrics_equal_a_plain_replay_of_the_steps(recorded_run):
    """train/acc and train/loss_epoch cover the epoch's training steps and nothing else (no validation leaks in)."""
    scalars, smoothing = recorded_run["scalars"], recorded_run["smoothing"]
    step_losses, accs, epoch_losses = [], [], []
    for epoch in range(EPOCHS):
        correct = loss_sum = 0.0
        for step in (s for s in recorded_run["record"]["steps"] if s["epoch"] == epoch):
            net = net_with(step["weights"]).train()
            with torch.no_grad():
                logits = net(step["x"])
            loss = F.cross_entropy(logits, step["y"], label_smoothing=smoothing)
            step_losses.append(loss.item())
            correct += (logits.argmax(1) == step["y"]).sum().item()
            loss_sum += loss.item() * len(step["y"])
        accs.append(correct / N_TRAIN)
        epoch_losses.append(loss_sum / N_TRAIN)
    assert scalars["train/acc"] == pytest.approx(accs, abs=1e-6)  # one image is 0.01
    assert scalars["train/loss_epoch"] == pytest.approx(epoch_losses, rel=1e-5)
    assert scalars["train/loss"] == pytest.approx(step_losses, rel=1e-5)  # logged on every step here


def check_validation_metrics_equal_plain_evaluation_of_each_epochs_weights(recorded_run):
    """val/acc and val/loss: the epoch's weights on the validation rows; the loss is plain cross-entropy."""
    labels, pixels = validation_rows(recorded_run)
    validated = recorded_run["record"]["validated"]
    assert [v["epoch"] for v in validated] == list(range(EPOCHS))
    expected = [plain_eval(v["weights"], labels, pixels, recorded_run["tta"]) for v in validated]
    scalars = recorded_run["scalars"]
    assert scalars["val/acc"] == pytest.approx([acc for acc, _ in expected], abs=1e-6)  # one image is 0.05
    assert scalars["val/loss"] == pytest.approx([loss for _, loss in expected], rel=1e-5)


def check_metrics_json_is_the_best_checkpoint_tested_plainly(recorded_run):
    """test_acc and test_loss: the checkpoint with the highest val/acc (the first, on a tie) on the test CSV."""
    metrics, scalars = recorded_run["metrics"], recorded_run["scalars"]
    val_accs = scalars["val/acc"]
    best_epoch = val_accs.index(max(val_accs))
    assert best_epoch < EPOCHS - 1, "this tiny run reaches val/acc 1.0 early, so best and last differ"
    checkpoint = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == best_epoch and metrics["epochs"] == EPOCHS
    weights = {k.removeprefix("backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
    for key, value in recorded_run["record"]["validated"][best_epoch]["weights"].items():
        assert torch.equal(weights[key], value), key
    assert metrics["val_acc"] == pytest.approx(max(val_accs), abs=1e-6)
    test_csv = plain_csv(recorded_run["data"] / "processed" / "fashion-mnist-test.csv")
    acc, loss = plain_eval(weights, *test_csv, recorded_run["tta"])
    assert metrics["test_acc"] == pytest.approx(acc, abs=1e-6)  # one image is 0.025
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert scalars["test/acc"] == pytest.approx([acc], abs=1e-6) and scalars["test/loss"] == pytest.approx([loss], rel=1e-5)
    _, last_loss = plain_eval(recorded_run["record"]["validated"][-1]["weights"], *test_csv, recorded_run["tta"])
    assert last_loss != pytest.approx(loss, rel=1e-3)  # so testing the last checkpoint instead would fail above
    assert metrics["tta_hflip"] is recorded_run["tta"]


def test_every_number_of_a_tiny_run_equals_plain_pytorch(recorded_run):
    """One test for the four checks: the run is made once (a module fixture), and a tool that maps code to the
    tests that reach it (mutmut) credits the fixture's work to the first test that uses it."""
    check_each_epoch_trains_on_the_training_split_once_with_its_labels(recorded_run)
    check_training_metrics_equal_a_plain_replay_of_the_steps(recorded_run)
    check_validation_metrics_equal_plain_evaluation_of_each_epochs_weights(recorded_run)
    check_metrics_json_is_the_best_checkpoint_tested_plainly(recorded_run)


def test_the_progress_bar_shows_the_epoch_metrics(tiny_data_dir):
    import lightning as L

    from fashion_conv import FashionClassifier

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(FashionClassifier("mlp", backbone_kwargs={"hidden": 8}), datamodule=FashionMNISTDataModule(tiny_data_dir, val_size=N_VAL))
    assert {"train/acc", "val/acc", "val/loss"} <= set(trainer.progress_bar_metrics)


def test_the_optimizer_gets_the_learning_rate_and_weight_decay():
    from fashion_conv import FashionClassifier

    adamw = FashionClassifier("mlp", lr=0.05, weight_decay=0.1).configure_optimizers()
    assert type(adamw) is torch.optim.AdamW and (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == (0.05, 0.1)
    adam = FashionClassifier("mlp", lr=0.05).configure_optimizers()
    assert type(adam) is torch.optim.Adam and (adam.defaults["lr"], adam.defaults["weight_decay"]) == (0.05, 0)


def test_the_schedule_is_the_one_named_over_the_run_s_steps():
    from types import SimpleNamespace

    from fashion_conv import FashionClassifier

    for name, kind in (("cosine", torch.optim.lr_scheduler.CosineAnnealingLR), ("onecycle", torch.optim.lr_scheduler.OneCycleLR)):
        model = FashionClassifier("mlp", lr=0.05, lr_schedule=name)
        model._trainer = SimpleNamespace(estimated_stepping_batches=10.0)  # what Lightning's trainer estimates
        config = model.configure_optimizers()
        scheduler = config["lr_scheduler"]["scheduler"]
        assert type(scheduler) is kind and config["lr_scheduler"]["interval"] == "step" and scheduler.optimizer is config["optimizer"]
        if name == "cosine":
            assert scheduler.T_max == 10 and scheduler.base_lrs == [0.05]
        else:
            assert scheduler.total_steps == 10 and config["optimizer"].param_groups[0]["max_lr"] == 0.05


def test_the_parameter_count_is_logged_once_at_step_0():
    from types import SimpleNamespace

    from fashion_conv import FashionClassifier

    model, calls = FashionClassifier("mlp"), []
    model._trainer = SimpleNamespace(logger=SimpleNamespace(log_metrics=lambda metrics, **kw: calls.append((metrics, kw))))
    model.on_fit_start()
    assert calls == [({"model/params": float(sum(p.numel() for p in model.backbone.parameters()))}, {"step": 0})]
    model._trainer = SimpleNamespace(logger=None)
    model.on_fit_start()  # no logger: nothing to do
    assert len(calls) == 1


def test_the_fused_optimizer_only_where_torch_has_the_kernel():
    from fashion_conv import FashionClassifier

    assert FashionClassifier("mlp").configure_optimizers().defaults["fused"] is True  # CPU float parameters
    assert FashionClassifier("mlp", weight_decay=0.1).configure_optimizers().defaults["fused"] is True  # AdamW too
    assert FashionClassifier("mlp").to("meta").configure_optimizers().defaults["fused"] is False  # another device


def test_each_written_step_loss_is_that_steps_loss(tiny_data_dir, tmp_path):
    import csv

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from fashion_conv import FashionClassifier

    class StepLosses(L.Callback):
        """The loss that each training step returned, by step."""

        def __init__(self):
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    L.seed_everything(0, verbose=False)
    returned = StepLosses()
    trainer = L.Trainer(max_epochs=1, logger=CSVLogger(tmp_path, name="", version=""), log_every_n_steps=3, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[returned])  # fmt: skip
    data = FashionMNISTDataModule(tiny_data_dir, val_size=N_VAL, batch_size=10)
    trainer.fit(FashionClassifier("mlp", backbone_kwargs={"hidden": 8}), datamodule=data)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert trainer.global_step == (120 - N_VAL) // 10 == len(returned.losses)
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [2, 5, 8]  # every third step, counted from 0
    # Each written loss is the loss of the step it is written at (not an earlier step's, held over).
    written = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    assert written == {s: returned.losses[s] for s in (2, 5, 8)}
    assert float(trainer.progress_bar_metrics["train/loss"]) == returned.losses[8]  # the last written
