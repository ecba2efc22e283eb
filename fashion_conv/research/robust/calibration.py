"""Calibration from logits: ECE (torchmetrics, 15 bins), NLL, Brier score, reliability bins, temperature scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

N_BINS = 15


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Expected calibration error of probabilities (N, C): sum over equal-width confidence bins of |acc - conf| x share."""
    return float(multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm="l1"))


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the labels, in nats."""
    return float(F.cross_entropy(logits.double(), labels))


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over images of sum_k (p_k - [k = label])^2: 0 for certain and right, 2 for certain and wrong."""
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    return float((probs - onehot).pow(2).sum(1).mean())


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> list[dict]:
    """Per confidence bin: images, mean confidence, accuracy; empty bins left out. Binned as torchmetrics bins:
    [lo, hi) on ``n_bins`` equal widths, and a confidence of exactly 1 in a bin of its own (lo = hi = 1)."""
    conf, pred = probs.max(1)
    correct = pred.eq(labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    which = torch.bucketize(conf, edges, right=True) - 1  # 0..n_bins; n_bins: conf == 1
    rows = []
    for b in range(n_bins + 1):
        mask = which == b
        n = int(mask.sum())
        if n:
            hi = float(edges[b + 1]) if b < n_bins else 1.0
            rows.append({"bin": b, "lo": float(edges[b]), "hi": hi, "n": n,
                         "confidence": float(conf[mask].double().mean()), "accuracy": float(correct[mask].mean())})  # fmt: skip
    return rows


def ece_from_bins(rows: list[dict]) -> float:
    """ECE from ``reliability_bins``: sum over bins of (images in bin / images) x |accuracy - confidence|."""
    total = sum(r["n"] for r in rows)
    return sum(r["n"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The T > 0 that minimizes the NLL of ``logits / T`` (LBFGS on log T, as Guo et al. 2017); never worse than T = 1."""
    logits = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if nll(logits / t, labels) <= nll(logits, labels) else 1.0


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    """Accuracy, ECE, NLL and Brier of ``logits / temperature``."""
    scaled = logits.double() / temperature
    probs = scaled.softmax(1)
    return {"accuracy": float(probs.argmax(1).eq(labels).double().mean()), "ece": ece(probs.float(), labels),
            "nll": nll(scaled, labels), "brier": brier(probs, labels)}  # fmt: skip
