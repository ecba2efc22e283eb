"""Fashion-MNIST-C corruption families at 5 severities, made from the test images with kornia, deterministically.

Images are float (N, 1, 28, 28) in [0, 1]. ``corrupt(images, family, severity, seed)`` draws every random number
from ``torch.manual_seed`` of a seed built from (seed, family, severity) inside ``torch.random.fork_rng``: the same
arguments give the same images, and the caller's random state is left as it was. Severity 0 returns the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import kornia.augmentation as KA
import kornia.enhance as KE
import kornia.filters as KF
import kornia.geometry.transform as KT
import torch

from fashion_conv.utils.errors import FashionConvError


@dataclass(frozen=True)
class Family:
    group: str  # noise, blur, geometry, light, fixed
    levels: tuple  # the parameter of severity 1..len(levels)
    meaning: str  # what the parameter is, for the docs
    apply: Callable[[torch.Tensor, object], torch.Tensor]  # (images, parameter) -> images, random from the global RNG


def _sign(n: int) -> torch.Tensor:
    """(n,) of +1 / -1 at random: a rotation or shear goes either way."""
    return torch.randint(0, 2, (n,)).float().mul_(2).sub_(1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1  # the kernel covers +-3 sigma
    return KF.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def _glass(x: torch.Tensor, p: tuple[float, int]) -> torch.Tensor:
    """Blur, move each pixel's source by a random whole offset up to ``delta`` (nearest), blur again (ImageNet-C's recipe)."""
    sigma, delta = p
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    dy, dx = (torch.randint(-delta, delta + 1, (2, n, h, w)).to(x.dtype)).unbind(0)  # (N, H, W) each
    map_y, map_x = (ys + dy).clamp(0, h - 1), (xs + dx).clamp(0, w - 1)
    moved = KT.remap(_blur(x, sigma), map_x, map_y, mode="nearest", align_corners=True)
    return _blur(moved, sigma)


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    return KT.rotate(x, degrees * _sign(len(x)))


def _shear(x: torch.Tensor, s: float) -> torch.Tensor:
    shear = torch.stack([s * _sign(len(x)), torch.zeros(len(x))], dim=1)  # (N, 2): horizontal shear only
    return KT.shear(x, shear)


def _scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return KT.scale(x, torch.full((len(x), 2), factor))


def _translate(x: torch.Tensor, pixels: float) -> torch.Tensor:
    angle = torch.rand(len(x)) * 2 * math.pi  # a random direction per image
    return KT.translate(x, pixels * torch.stack([angle.cos(), angle.sin()], dim=1))


def _elastic(x: torch.Tensor, alpha: float) -> torch.Tensor:
    noise = torch.rand(len(x), 2, *x.shape[-2:]) * 2 - 1  # (N, 2, H, W) displacement seeds in [-1, 1]
    return KT.elastic_transform2d(x, noise, kernel_size=(15, 15), sigma=(3.0, 3.0), alpha=(alpha, alpha))


def _pixelate(x: torch.Tensor, side: int) -> torch.Tensor:
    small = KT.resize(x, (side, side), interpolation="area")
    return KT.resize(small, x.shape[-2:], interpolation="nearest")


def _speckle(x: torch.Tensor, c: float) -> torch.Tensor:
    return x + x * torch.randn_like(x) * c  # multiplicative noise: bright pixels get more


def _shot(x: torch.Tensor, photons: float) -> torch.Tensor:
    return torch.poisson(x * photons) / photons  # Poisson photon counts: fewer photons, more noise


def _canny(x: torch.Tensor, _) -> torch.Tensor:
    return KF.canny(x)[1]  # the edge map (N, 1, H, W), 0 or 1


FAMILIES: dict[str, Family] = {
    "gaussian_noise": Family("noise", (0.08, 0.12, 0.18, 0.26, 0.38), "std of added N(0, std)",
                             lambda x, s: KA.RandomGaussianNoise(std=s, p=1.0)(x)),
    "shot_noise": Family("noise", (60, 25, 12, 5, 3), "photons at full brightness (Poisson)", _shot),
    "impulse_noise": Family("noise", (0.03, 0.06, 0.09, 0.17, 0.27), "fraction of pixels set to 0 or 1",
                            lambda x, a: KA.RandomSaltAndPepperNoise(amount=(a, a), salt_vs_pepper=(0.5, 0.5), p=1.0)(x)),
    "speckle_noise": Family("noise", (0.15, 0.2, 0.35, 0.45, 0.6), "std c of x + x * N(0, c)", _speckle),
    "gaussian_blur": Family("blur", (0.5, 0.75, 1.0, 1.25, 1.5), "sigma in pixels", _blur),
    "glass_blur": Family("blur", ((0.3, 1), (0.4, 1), (0.5, 2), (0.6, 2), (0.7, 3)), "(sigma, max pixel move)", _glass),
    "motion_blur": Family("blur", (3, 5, 7, 9, 11), "kernel length in pixels, angle uniform in +-45 degrees",
                          lambda x, k: KA.RandomMotionBlur(kernel_size=k, angle=(-45.0, 45.0), direction=(0.0, 0.0), p=1.0)(x)),
    "rotate": Family("geometry", (8, 16, 24, 32, 40), "degrees, random sign", _rotate),
    "shear": Family("geometry", (0.1, 0.2, 0.3, 0.4, 0.5), "horizontal shear factor, random sign", _shear),
    "scale": Family("geometry", (0.9, 0.8, 0.7, 0.6, 0.5), "zoom factor about the centre", _scale),
    "translate": Family("geometry", (1, 2, 3, 4, 5), "pixels, random direction", _translate),
    "elastic": Family("geometry", (0.5, 1.0, 1.5, 2.0, 2.5), "alpha of a 3-pixel-sigma smoothed field", _elastic),
    "brightness": Family("light", (0.1, 0.2, 0.3, 0.4, 0.5), "added to every pixel",
                         lambda x, b: KE.adjust_brightness(x, b)),
    "contrast": Family("light", (0.4, 0.3, 0.2, 0.1, 0.05), "factor about each image's mean",
                       lambda x, c: KE.adjust_contrast_with_mean_subtraction(x, c)),
    "fog": Family("light", (0.2, 0.35, 0.5, 0.65, 0.8), "plasma-fractal intensity (roughness 0.6)",
                  lambda x, i: KA.RandomPlasmaBrightness(roughness=(0.6, 0.6), intensity=(i, i), p=1.0)(x)),
    "pixelate": Family("light", (24, 20, 16, 12, 10), "side the image is shrunk to (area), then enlarged (nearest)", _pixelate),
    "quantize": Family("light", (5, 4, 3, 2, 1), "bits per pixel kept", lambda x, b: KE.posterize(x, b)),
    # One level each: these have no strength.
    "inverse": Family("fixed", (None,), "1 - x", lambda x, _: KE.invert(x)),
    "canny_edges": Family("fixed", (None,), "kornia Canny edge map (thresholds 0.1, 0.2)", _canny),
    "flip_lr": Family("fixed", (None,), "mirror left-right", lambda x, _: KT.hflip(x)),
    "flip_ud": Family("fixed", (None,), "mirror top-bottom", lambda x, _: KT.vflip(x)),
    "turn_left": Family("fixed", (None,), "rotate 90 degrees anticlockwise", lambda x, _: torch.rot90(x, 1, (-2, -1))),
    "turn_right": Family("fixed", (None,), "rotate 90 degrees clockwise", lambda x, _: torch.rot90(x, -1, (-2, -1))),
}  # fmt: skip


def list_families() -> list[str]:
    return list(FAMILIES)


def severities(family: str) -> list[int]:
    """The severities of ``family``: 1..5, or [1] for a fixed transformation."""
    return list(range(1, len(_family(family).levels) + 1))


def conditions() -> list[tuple[str, int]]:
    """Every (family, severity) pair, families in registry order."""
    return [(f, s) for f in FAMILIES for s in severities(f)]


def condition_seed(seed: int, family: str, severity: int) -> int:
    """A distinct seed per (seed, family, severity), so families do not share their random draws."""
    return seed * 10_000 + list(FAMILIES).index(family) * 10 + severity


def corrupt(images: torch.Tensor, family: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (N, 1, 28, 28) in [0, 1] under ``family`` at ``severity`` (0: the images themselves), clipped to [0, 1]."""
    fam = _family(family)
    if severity == 0:
        return images
    if not 1 <= severity <= len(fam.levels):
        raise FashionConvError(f"{family}: severity must be 0..{len(fam.levels)}, got {severity}")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(condition_seed(seed, family, severity))
        out = fam.apply(images.float(), fam.levels[severity - 1])
    return out.clamp(0, 1)


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise FashionConvError(f"unknown corruption family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
