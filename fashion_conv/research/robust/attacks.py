"""FGSM and PGD (L-inf) against any backbone, with the Adversarial Robustness Toolbox; accuracy per epsilon.

ART works on numpy arrays. PGD's random start draws from numpy's global generator: it is seeded here, and the
caller's numpy state is put back afterwards, so the same call gives the same adversarial images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

EPSILONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
PGD_STEPS = 40


def art_classifier(model: nn.Module, num_classes: int = 10):
    """``model`` (eval mode, images (N, 1, 28, 28) in [0, 1] -> logits) as an ART PyTorchClassifier on CPU."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model.eval(), loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=num_classes,
                             clip_values=(0.0, 1.0), device_type="cpu")  # fmt: skip


def adversarial_images(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str, eps: float,
                       steps: int = PGD_STEPS, seed: int = 0, batch_size: int = 500) -> torch.Tensor:  # fmt: skip
    """Images moved by at most ``eps`` per pixel (L-inf, kept in [0, 1]) to raise the loss of their true ``labels``.

    ``attack``: ``fgsm`` (one signed-gradient step of size eps) or ``pgd`` (``steps`` steps of 2.5 eps / steps from a
    random start in the eps-ball, projected back after each step: Madry et al. 2018).
    """
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    clf = art_classifier(model)
    x, y = images.detach().cpu().numpy().astype(np.float32), labels.cpu().numpy()
    if attack == "fgsm":
        method = FastGradientMethod(clf, norm=np.inf, eps=eps, batch_size=batch_size)
    elif attack == "pgd":
        method = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=max(2.5 * eps / steps, 1e-12), max_iter=steps,
                                          num_random_init=1, batch_size=batch_size, verbose=False)  # fmt: skip
    else:
        raise ValueError(f"unknown attack {attack!r}: fgsm or pgd")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        adv = method.generate(x, y=y)
    finally:
        np.random.set_state(state)
    return torch.from_numpy(adv)


def attack_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str, eps: float,
                    steps: int = PGD_STEPS, seed: int = 0) -> float:  # fmt: skip
    """Accuracy of ``model`` on the adversarial images of ``attack`` at ``eps``."""
    adv = adversarial_images(model, images, labels, attack, eps, steps, seed)
    with torch.no_grad():
        return float(model.eval()(adv).argmax(1).eq(labels).double().mean())
