"""Keep the console for what helps: drop known Lightning/torch noise, each by its exact message and category.

Only the command-line entry points call ``install``; a library user's own Lightning project is left as it is.
"""

from __future__ import annotations

import logging
import warnings

# Lightning's advertisement for its cloud products, printed on every run (an INFO log record, not a warning).
_TIP_PREFIX = "💡 Tip:"
_TIP_PRODUCTS = ("litlogger", "litmodels")
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(_TIP_PREFIX) and any(p in message for p in _TIP_PRODUCTS))


_TIP_FILTER = _DropLightningTips()


def install() -> None:
    """Silence the noise every ``fit`` run would print; idempotent."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
    # Lightning 2.6's own pytree helper uses a class torch 2.10+ deprecates; nothing for us to change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    # bf16-mixed runs: Lightning's summary table estimates the model's size in MB as if fp32 and says so.
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary", category=UserWarning)


def resuming() -> None:
    """A resumed run writes into its own checkpoint folder on purpose; Lightning warns that it is not empty. A run
    stopped mid-epoch resumes exactly through our sampler (GracefulStop moves ``EpochShuffle`` past the batches
    done), so Lightning's warning that the dataloader is not resumable does not apply."""
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended", category=UserWarning)


class _DropMissingTorchvision(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed. Skipping torchvision::")


_TORCHVISION_FILTER = _DropMissingTorchvision()


def exporting() -> None:
    """torch's ONNX exporter logs one line per torchvision operator it cannot register when torchvision is absent;
    the backbones use none of them. torch's export path also raises the LeafSpec FutureWarning that ``install`` drops."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    if _TORCHVISION_FILTER not in logger.filters:
        logger.addFilter(_TORCHVISION_FILTER)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
