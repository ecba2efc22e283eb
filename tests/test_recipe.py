"""Training-recipe options change what they claim, on tiny data; all are off by default."""

import lightning as L
import pytest
import torch

from fashion_conv import FashionClassifier, FashionMNISTDataModule
from fashion_conv.augment import augment, step_generator
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


def test_datamodule_augments_training_batches_only(tiny_data_dir):
    dm = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=16, random_shift=2, hflip=True)
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


def test_weight_decay_uses_adamw(tiny_data_dir):
    assert type(fit_tiny(tiny_data_dir, weight_decay=0.05).optimizers[0]) is torch.optim.AdamW
    assert type(fit_tiny(tiny_data_dir).optimizers[0]) is torch.optim.Adam


def test_label_smoothing_changes_the_training_loss_only():
    torch.manual_seed(0)
    plain, smooth = FashionClassifier("mlp"), FashionClassifier("mlp", label_smoothing=0.1)
    smooth.load_state_dict(plain.state_dict())
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for m in (plain, smooth):
        m.log = lambda *a, **k: None
        m.trainer = L.Trainer(logger=False, enable_progress_bar=False)
    assert not torch.isclose(plain.training_step((x, y), 0), smooth.training_step((x, y), 0))


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
