"""The report's summary numbers: accuracy, Wilson intervals, corruption error relative to a baseline, seed separation."""

from __future__ import annotations

import math

import torch
from scipy.stats import binomtest
from torch import nn

from fashion_conv.models.weights import flip_tta


def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, C) of ``model`` in eval mode, in batches, without gradients."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(logits.argmax(1).eq(labels).double().mean())


def wilson(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion correct / n (scipy's binomtest)."""
    ci = binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def corruption_error(errors: list[float], baseline_errors: list[float]) -> float:
    """ImageNet-C's CE of one family: sum over severities of the model's error / the same sum for the baseline (nan if 0)."""
    base = sum(baseline_errors)
    return sum(errors) / base if base else math.nan


def relative_corruption_error(errors: list[float], clean_error: float, baseline_errors: list[float], baseline_clean: float) -> float:
    """ImageNet-C's relative CE: the error added by the corruption, over the baseline's added error (robustness beyond accuracy)."""
    base = sum(e - baseline_clean for e in baseline_errors)
    return sum(e - clean_error for e in errors) / base if base else math.nan


def separated(a: list[float], b: list[float]) -> int:
    """+1 if every value of ``a`` is above every value of ``b``, -1 if every one is below, else 0.

    Needs two values on at least one side (one run against one run says nothing of the spread between seeds).
    """
    if not a or not b or (len(a) < 2 and len(b) < 2):
        return 0
    return 1 if min(a) > max(b) else -1 if max(a) < min(b) else 0


def robustness_verdict(acc: list[float], base_acc: list[float], drop: list[float], base_drop: list[float]) -> str:
    """Per-seed accuracy under a corruption and accuracy lost to it, against a baseline's, in words.

    ``more robust``: loses less accuracy than the baseline (every seed); ``only more accurate``: higher accuracy
    under the corruption but a loss that is not measurably smaller; ``no measured difference``: seeds overlap.
    """
    lost = separated(base_drop, drop)  # +1: the baseline loses more
    if lost:
        return "more robust" if lost > 0 else "less robust"
    higher = separated(acc, base_acc)
    if higher:
        return "only more accurate" if higher > 0 else "only less accurate"
    return "no measured difference"


class FlipTTA(nn.Module):
    """A backbone evaluated as fit evaluates a ``--model.tta_hflip`` run: logits averaged over each image and its mirror."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flip_tta(self.backbone, x)
