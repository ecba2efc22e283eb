"""The console filters drop exactly the known noise: other warnings and Lightning's other messages still show."""

import logging
import warnings

from lightning.pytorch.utilities.rank_zero import rank_zero_info

from fashion_conv.utils import quiet


def test_leafspec_deprecation_dropped_other_future_warnings_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.install()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`", FutureWarning)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning)  # another category: kept
        warnings.warn("something else is deprecated", FutureWarning)
        warnings.warn("Precision bf16-mixed is not supported by the model summary.  Estimated model size ...", UserWarning)
    assert [(type(w.message), str(w.message)) for w in caught] == [
        (UserWarning, "`isinstance(treespec, LeafSpec)` is deprecated"),
        (FutureWarning, "something else is deprecated"),
    ]


def test_lightning_tips_dropped_other_info_kept(caplog):
    quiet.install()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):  # a study run in this process may have raised it
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](...)")
        rank_zero_info("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels](...)")
        rank_zero_info("`Trainer.fit` stopped: `max_epochs=1` reached.")
    assert [r.getMessage() for r in caplog.records] == ["`Trainer.fit` stopped: `max_epochs=1` reached."]


def test_resume_warnings_dropped_only_when_resuming():
    folder = "Checkpoint directory lightning_logs/cnn/version_0/checkpoints exists and is not empty."
    mid_epoch = "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(folder, UserWarning)
        warnings.warn(mid_epoch, UserWarning)
        quiet.resuming()
        warnings.warn(folder, UserWarning)
        warnings.warn(mid_epoch, UserWarning)
    assert [str(w.message) for w in caught] == [folder, mid_epoch]
