"""The test images a model gets most confidently wrong, per true class."""

from __future__ import annotations

import torch
from torch import nn


def predict_probs(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities (N, K) for images (N, 1, H, W), in batches."""
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)])


def confident_errors(probs: torch.Tensor, labels: torch.Tensor, per_class: int = 3) -> list[dict]:
    """For each true class, its ``per_class`` misclassified images with the highest wrong-class probability.

    Rows {index, true, predicted, confidence, p_true}, grouped by true class, most confident first.
    """
    predicted = probs.argmax(1)
    rows = []
    for label in range(probs.shape[1]):
        wrong = torch.nonzero((labels == label) & (predicted != label)).flatten()
        order = probs[wrong, predicted[wrong]].argsort(descending=True)[:per_class]
        for i in wrong[order].tolist():
            rows.append({"index": i, "true": label, "predicted": int(predicted[i]), "confidence": probs[i, predicted[i]].item(), "p_true": probs[i, label].item()})
    return rows


def confusion_pairs(probs: torch.Tensor, labels: torch.Tensor, top: int = 5) -> list[tuple[int, int, int]]:
    """The ``top`` (true, predicted, count) pairs of most frequent errors."""
    predicted = probs.argmax(1)
    k = probs.shape[1]
    counts = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    counts.fill_diagonal_(0)
    flat = counts.flatten().argsort(descending=True)[:top]
    return [(int(i // k), int(i % k), int(counts.flatten()[i])) for i in flat if counts.flatten()[i] > 0]
