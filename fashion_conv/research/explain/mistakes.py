"""What a model gets wrong on the test images: accuracy, the most confident mistakes per class, the frequent confusions."""

from __future__ import annotations

import torch
from torch import nn


def predict_probs(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities (N, K) for images (N, 1, H, W), in batches."""
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)])


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of rows of ``probs`` (N, K) whose argmax is the label (N,): a count over N, in float64."""
    return (probs.argmax(1) == labels).sum().item() / len(labels)


def confident_errors(probs: torch.Tensor, labels: torch.Tensor, per_class: int = 3) -> list[dict]:
    """For each true class, its ``per_class`` misclassified images with the highest wrong-class probability.

    Rows {index, true, predicted, confidence, p_true}, grouped by true class, most confident first (on a tie, the
    lower index first: probabilities saturate at 1.0 for the worst mistakes).
    """
    predicted = probs.argmax(1)
    rows = []
    for label in range(probs.shape[1]):
        wrong = torch.nonzero((labels == label) & (predicted != label)).flatten()
        order = probs[wrong, predicted[wrong]].argsort(descending=True, stable=True)[:per_class]
        for i in wrong[order].tolist():
            rows.append({"index": i, "true": label, "predicted": int(predicted[i]), "confidence": probs[i, predicted[i]].item(), "p_true": probs[i, label].item()})
    return rows


def worst_per_class(rows: list[dict]) -> list[dict]:
    """The first row of each true class in ``confident_errors``' rows: its most confident mistake, by class."""
    first: dict[int, dict] = {}
    for row in rows:
        first.setdefault(row["true"], row)
    return [first[label] for label in sorted(first)]


def confusion_pairs(probs: torch.Tensor, labels: torch.Tensor, top: int = 5) -> list[tuple[int, int, int]]:
    """The ``top`` (true, predicted, count) pairs of most frequent errors (on a tie, in (true, predicted) order)."""
    predicted = probs.argmax(1)
    k = probs.shape[1]
    counts = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    counts.fill_diagonal_(0)
    flat = counts.flatten()
    return [(i // k, i % k, int(flat[i])) for i in flat.argsort(descending=True, stable=True)[:top].tolist() if flat[i] > 0]
