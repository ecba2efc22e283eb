"""Training-recipe options change what they claim, on tiny data; all are off by default."""

import csv
import json

import lightning as L
import pytest
import torch

from fashion_conv import FashionClassifier, FashionMNISTDataModule
from fashion_conv.data.augment import augment, erase, step_generator
from fashion_conv.fit import main


def test_augment_flips_about_half_and_is_reproducible():
    x = torch.rand(400, 1, 28, 28)
    a = augment(x, 0, True, step_generator(1, 5, x.device))
    b = augment(x, 0, True, step_generator(1, 5, x.device))
    assert torch.equal(a, b)
    flipped = (a == x.flip(-1)).flatten(1).all(1)
    assert 150 < int(flipped.sum()) < 250 and ((a == x).flatten(1).all(1) | flipped).all()
    shifted = augment(x, 2, False, step_generator(1, 5, x.device))
    assert not torch.equal(shifted, x) and shifted.shape == x.shape


def test_random_erasing_fills_one_rectangle_in_about_p_of_the_images():
    x = torch.full((1000, 1, 28, 28), -1.0)  # outside the noise's [0, 1), so erased pixels are easy to find
    out = erase(x, 0.5, step_generator(3, 0, x.device))
    erased = out != x
    hit = erased.flatten(1).any(1)
    assert 400 < int(hit.sum()) < 600 and torch.equal(out[~hit], x[~hit])
    for mask in erased[hit][:50, 0]:  # each erased region is one solid rectangle of 2-25 % of the image (+ rounding)
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w and int(mask.sum()) == h * w
        assert 0.01 * 784 <= h * w <= 0.3 * 784
    assert ((out[erased] >= 0) & (out[erased] < 1)).all()
    assert torch.equal(out, erase(x, 0.5, step_generator(3, 0, x.device)))  # seeded by step: resume redraws the same


def test_tta_hflip_averages_the_mirror_logits():
    torch.manual_seed(0)
    plain, tta = FashionClassifier("cnn"), FashionClassifier("cnn", tta_hflip=True)
    tta.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 28, 28)
    expected = (plain(x) + plain(x.flip(-1))) / 2
    torch.testing.assert_close(tta.evaluate(x), expected)
    torch.testing.assert_close(plain.evaluate(x), plain(x))
    torch.testing.assert_close(tta.predict_step(x, 0), expected.softmax(1))
    assert not torch.allclose(tta.evaluate(x), plain(x))


def test_datamodule_augments_training_batches_only(tiny_data_dir):
    dm = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=16, random_shift=2, hflip=True, random_erasing=0.5)
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    dm.trainer.state.stage = "validate"
    assert dm.on_after_batch_transfer(batch, 0) is batch
    dm.trainer.training = True
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(x, batch[0]) and torch.equal(y, batch[1])


def fit_tiny(tiny_data_dir, **model_kwargs):
    dm = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=10)
    model = FashionClassifier("mlp", **model_kwargs)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return trainer


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_lr_schedule_changes_the_rate(tiny_data_dir, schedule):
    trainer = fit_tiny(tiny_data_dir, lr_schedule=schedule, lr=1e-3)
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert lrs[0] < 1e-4  # annealed towards zero by the last of the 20 steps
    assert fit_tiny(tiny_data_dir).optimizers[0].param_groups[0]["lr"] == 1e-3  # default: constant


def test_the_learning_rate_is_on_the_dashboard(tiny_data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=10)
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="", version="")
    monitor = L.pytorch.callbacks.LearningRateMonitor(logging_interval="step")  # what fit adds to its TensorBoard runs
    trainer = L.Trainer(max_epochs=2, logger=logger, log_every_n_steps=2, enable_checkpointing=False, callbacks=[monitor],
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(FashionClassifier("mlp", lr_schedule="onecycle", lr=1e-2), datamodule=dm)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    lrs = [e.value for e in events.Scalars("lr-Adam")]
    assert len(lrs) == 10  # every logging step of the 20
    assert max(lrs) == pytest.approx(1e-2, rel=0.05) and lrs[-1] < 1e-4 and lrs.index(max(lrs)) in (1, 2)


def test_weight_decay_uses_adamw(tiny_data_dir):
    assert type(fit_tiny(tiny_data_dir, weight_decay=0.05).optimizers[0]) is torch.optim.AdamW
    assert type(fit_tiny(tiny_data_dir).optimizers[0]) is torch.optim.Adam


def test_label_smoothing_changes_the_training_loss_only():
    torch.manual_seed(0)
    plain, smooth = FashionClassifier("mlp"), FashionClassifier("mlp", label_smoothing=0.1)
    smooth.load_state_dict(plain.state_dict())
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    logged = {}
    for m in (plain, smooth):
        m.log = lambda name, value, *a, _m=m, **k: logged.__setitem__((_m, name), value)
        m.trainer = L.Trainer(logger=False, enable_progress_bar=False)
    assert not torch.isclose(plain.training_step((x, y), 0), smooth.training_step((x, y), 0))
    torch.testing.assert_close(smooth.training_step((x, y), 0), torch.nn.functional.cross_entropy(plain(x), y, label_smoothing=0.1))
    for m in (plain, smooth):  # the evaluation losses are plain cross-entropy, smoothing or not
        m.validation_step((x, y), 0)
        m.test_step((x, y), 0)
        for stage in ("val", "test"):
            torch.testing.assert_close(logged[(m, f"{stage}/loss")], torch.nn.functional.cross_entropy(plain(x), y))


def test_early_stopping_from_the_command_line(tiny_data_dir, tmp_path):
    args = ["--data.data_dir", str(tiny_data_dir), "--data.val_size", "20", "--model.backbone", "mlp",
            "--trainer.max_epochs", "30", "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/acc", "--trainer.callbacks.mode=max",
            "--trainer.callbacks.patience=2"]  # fmt: skip
    assert main(args) == 0
    metrics = (tmp_path / "lightning_logs/mlp/version_0/metrics.json").read_text()
    assert '"epochs": 30' not in metrics


def test_strong_config_parses(capsys):
    with pytest.raises(SystemExit):
        main(["--config", "configs/strong.yaml", "--print_config"])
    out = capsys.readouterr().out
    assert "backbone: cnn" in out and "random_shift: 2" in out and "lr_schedule: onecycle" in out


def test_ingredients_study_runs_resumes_and_reports(tiny_data_dir, tmp_path, capsys):
    from fashion_conv.research import ingredients

    argv = ["--rows", "notebook", "hflip", "epochs", "strong", "noaug", "--seeds", "0", "1", "--data-dir", str(tiny_data_dir),
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
            "--data.val_size", "20", "--trainer.max_epochs", "1"]  # fmt: skip
    assert ingredients.main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "out/results.csv").open()))
    names = ("notebook", "hflip", "epochs", "strong", "noaug")
    assert [(r["row"], r["seed"]) for r in rows] == [(n, s) for n in names for s in "01"]
    assert all(r["epochs"] == "1" for r in rows)
    epochs, strong = rows[4:6], rows[6:8]  # one training run, tested with and without flip TTA
    assert [r["val_acc"] for r in epochs] == [r["val_acc"] for r in strong]
    config = (tmp_path / "runs/hflip/seed1/lightning_logs/cnn/version_0/config.yaml").read_text()
    assert "hflip: true" in config and "seed_everything: 1" in config and "lr_schedule: onecycle" in config
    config = (tmp_path / "runs/noaug/seed0/lightning_logs/cnn/version_0/config.yaml").read_text()
    assert "random_shift: 0" in config and "hflip: false" in config and "tta_hflip: false" in config
    assert "weight_decay: 0.05" in config and "max_epochs: 1" in config
    tta = [json.loads(p.read_text())["tta_hflip"] for p in sorted((tmp_path / "runs").glob("*/seed0/**/metrics.json"))]
    assert tta == [False, False, False, True]  # hflip, noaug, notebook, strong
    report = (tmp_path / "out/report.md").read_text()
    assert "| notebook |" in report and "| strong |" in report and "± " in report
    capsys.readouterr()
    assert ingredients.main(argv) == 0  # finished runs are read back, not trained again
    assert "python -m fashion_conv.fit" not in capsys.readouterr().out


def test_the_model_defaults_are_the_notebooks_cnn_and_adam_at_1e_3():
    model = FashionClassifier()
    assert dict(model.hparams) == {
        "backbone": "cnn", "backbone_kwargs": None, "lr": 1e-3, "num_classes": 10, "channels_last": True,
        "weight_decay": 0.0, "label_smoothing": 0.0, "lr_schedule": "none", "tta_hflip": False,
    }  # fmt: skip
    assert model.num_params == 421_642 and model.memory_format == torch.channels_last
    assert model.backbone.conv[3].weight.is_contiguous(memory_format=torch.channels_last)  # (64, 32, 3, 3): NHWC


def test_a_backbone_instance_is_used_as_given_and_named_by_its_class_path():
    from nets import TinyNet

    net = TinyNet()
    model = FashionClassifier(net, channels_last=False)
    assert model.backbone is net and model.hparams.backbone == "nets.TinyNet" and model.num_params == 170
    assert model.memory_format == torch.contiguous_format


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0.0}, "lr must be positive, got 0.0"),
        ({"lr": -0.001}, "lr must be positive, got -0.001"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0, got -0.1"),
        ({"label_smoothing": 1.0}, "label_smoothing must be in [0, 1), got 1.0"),
        ({"label_smoothing": -0.1}, "label_smoothing must be in [0, 1), got -0.1"),
        ({"lr_schedule": "step"}, "lr_schedule 'step': choose none, cosine or onecycle"),
    ],
)
def test_model_options_out_of_range_are_refused_with_one_message(kwargs, message):
    from fashion_conv import FashionConvError

    with pytest.raises(FashionConvError) as exc:
        FashionClassifier("mlp", **kwargs)
    assert str(exc.value) == message
    FashionClassifier("mlp", lr=1e-9, weight_decay=0.0, label_smoothing=0.999)  # the edges that are allowed
