"""Measure models on tensors: corruptions, attacks and calibration, as rows for the report (no files)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from fashion_conv.research.robust.attacks import EPSILONS, PGD_STEPS, attack_accuracy
from fashion_conv.research.robust.calibration import calibration_metrics, fit_temperature, reliability_bins
from fashion_conv.research.robust.corruptions import conditions, corrupt
from fashion_conv.research.robust.scores import accuracy, predict_logits


@dataclass
class Measured:
    """One model's measurements; ``group`` joins the seeds of one recipe (its label in the report)."""

    group: str
    model: nn.Module
    source: str
    corruption: list[dict] = field(default_factory=list)  # family, severity, accuracy
    adversarial: list[dict] = field(default_factory=list)  # attack, eps, accuracy, correct, n
    calibration: list[dict] = field(default_factory=list)  # data, scaled, accuracy, ece, nll, brier
    reliability: list[dict] = field(default_factory=list)  # data, scaled, bin, lo, hi, n, confidence, accuracy
    temperature: float = 1.0
    clean_accuracy: float = 0.0  # all test images
    attack_clean_accuracy: float = 0.0  # the attacked images, unattacked
    seconds: dict = field(default_factory=lambda: defaultdict(float))  # stage -> seconds


@dataclass
class Data:
    """Tensors the measurements use: test (all), its first ``n_corrupt`` and ``n_adv`` images, and validation."""

    test: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    n_corrupt: int
    n_adv: int
    seed: int = 0


def measure_corruptions(models: list[Measured], data: Data) -> dict[str, torch.Tensor]:
    """Accuracy of every model on every (family, severity); returns each model's corrupted logits (all conditions)."""
    images, labels = data.test[0][: data.n_corrupt], data.test[1][: data.n_corrupt]
    pooled = {id(m): [] for m in models}
    for m in models:  # severity 0: the same images, uncorrupted
        m.corruption.append({"family": "clean", "severity": 0, "accuracy": accuracy(predict_logits(m.model, images), labels)})
    for family, severity in conditions():
        x = corrupt(images, family, severity, data.seed)  # made once, shared by all models
        for m in models:
            start = time.perf_counter()
            logits = predict_logits(m.model, x)
            m.seconds["corruptions"] += time.perf_counter() - start
            m.corruption.append({"family": family, "severity": severity, "accuracy": accuracy(logits, labels)})
            pooled[id(m)].append(logits)
    return {id(m): torch.cat(pooled[id(m)]) for m in models}


def measure_attacks(m: Measured, data: Data, epsilons=EPSILONS, steps: int = PGD_STEPS) -> None:
    """FGSM and PGD accuracy at each eps on the first ``n_adv`` test images."""
    images, labels = data.test[0][: data.n_adv], data.test[1][: data.n_adv]
    m.attack_clean_accuracy = accuracy(predict_logits(m.model, images), labels)
    for attack in ("fgsm", "pgd"):
        for eps in epsilons:
            start = time.perf_counter()
            acc = attack_accuracy(m.model, images, labels, attack, eps, steps, data.seed)
            m.seconds[attack] += time.perf_counter() - start
            m.adversarial.append({"attack": attack, "eps": eps, "accuracy": acc, "correct": round(acc * len(labels)), "n": len(labels)})


def measure_calibration(m: Measured, data: Data, corrupted_logits: torch.Tensor) -> None:
    """T fitted on validation; metrics and reliability bins before/after on clean test and pooled corrupted test."""
    start = time.perf_counter()
    val_logits = predict_logits(m.model, data.val[0])
    m.temperature = fit_temperature(val_logits, data.val[1])
    test_logits = predict_logits(m.model, data.test[0])
    m.clean_accuracy = accuracy(test_logits, data.test[1])
    n_conditions = len(corrupted_logits) // data.n_corrupt
    sets = {"validation": (val_logits, data.val[1]), "test": (test_logits, data.test[1]),
            "corrupted test": (corrupted_logits, data.test[1][: data.n_corrupt].repeat(n_conditions))}  # fmt: skip
    for name, (logits, labels) in sets.items():
        for scaled, t in (("before", 1.0), ("after", m.temperature)):
            m.calibration.append({"data": name, "scaled": scaled, "temperature": t, **calibration_metrics(logits, labels, t)})
            if name != "validation":
                probs = (logits.double() / t).softmax(1).float()
                m.reliability += [{"data": name, "scaled": scaled, **row} for row in reliability_bins(probs, labels)]
    m.seconds["calibration"] += time.perf_counter() - start


def measure(models: list[Measured], data: Data, epsilons=EPSILONS, steps: int = PGD_STEPS, progress=print) -> None:
    """Every measurement of every model, filling each ``Measured`` in place."""
    progress(f"corruptions: {len(conditions())} conditions x {data.n_corrupt} images, {len(models)} models")
    corrupted = measure_corruptions(models, data)
    for m in models:
        measure_calibration(m, data, corrupted[id(m)])
        progress(f"{m.group} ({m.source}): clean {100 * m.clean_accuracy:.2f} %, T = {m.temperature:.3f}; attacking")
        measure_attacks(m, data, epsilons, steps)
