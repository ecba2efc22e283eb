"""Robustness of trained backbones: Fashion-MNIST-C corruptions (kornia), FGSM/PGD (ART), calibration (torchmetrics).

A Python API on any backbone ``nn.Module`` and tensors (no files); ``python -m fashion_conv.research.robust`` writes
the report (Markdown, PNG figures, CSVs).
"""

from fashion_conv.research.robust.attacks import EPSILONS, PGD_STEPS, adversarial_images, attack_accuracy
from fashion_conv.research.robust.calibration import (
    brier, calibration_metrics, ece, ece_from_bins, fit_temperature, nll, reliability_bins,
)  # fmt: skip
from fashion_conv.research.robust.corruptions import FAMILIES, conditions, corrupt, list_families, severities
from fashion_conv.research.robust.scores import (
    FlipTTA, accuracy, corruption_error, predict_logits, relative_corruption_error, robustness_verdict, separated, wilson,
)  # fmt: skip

__all__ = [
    "EPSILONS", "FAMILIES", "FlipTTA", "PGD_STEPS", "accuracy", "adversarial_images", "attack_accuracy", "brier",
    "calibration_metrics", "conditions", "corrupt", "corruption_error", "ece", "ece_from_bins", "fit_temperature",
    "list_families", "nll", "predict_logits", "relative_corruption_error", "reliability_bins", "robustness_verdict",
    "separated", "severities", "wilson",
]  # fmt: skip
