"""Training-time augmentation on whole batches of tensors (on the batch's device, no per-sample Python).

Randomness comes from a generator seeded by (seed, step), so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Move each image (B, C, H, W) by (dy[b], dx[b]) pixels, filling with zeros (the background)."""
    _, _, h, w = x.shape
    k = int(max(dy.abs().max(), dx.abs().max(), 0)) if len(dy) else 0
    padded = F.pad(x, (k, k, k, k))  # (B, C, H + 2k, W + 2k)
    rows = torch.arange(h, device=x.device)[None, :] + k - dy[:, None]  # (B, H): source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] + k - dx[:, None]  # (B, W)
    b = torch.arange(len(x), device=x.device)[:, None, None]
    # (B, H, W, C) after advanced indexing on dims 0, 2, 3, then back to (B, C, H, W)
    return padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def erase(x: torch.Tensor, p: float, generator: torch.Generator, scale=(0.02, 0.25), ratio=(0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017): with probability ``p``, fill one random rectangle of each image
    with uniform noise. The rectangle covers ``scale`` of the image area, with aspect ratio in ``ratio``."""
    n, _, h, w = x.shape
    dev = x.device
    u = torch.rand(6, n, generator=generator, device=dev)
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * h * w
    log_r = torch.log(torch.tensor(ratio[0])) + (torch.log(torch.tensor(ratio[1] / ratio[0]))) * u[1]
    eh = torch.sqrt(area * log_r.exp()).round().clamp(1, h)
    ew = torch.sqrt(area / log_r.exp()).round().clamp(1, w)
    top = (u[2] * (h - eh + 1)).floor()
    left = (u[3] * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & (u[4] < p)[:, None, None])[:, None]  # (B, 1, H, W)
    noise = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype)
    return torch.where(mask, noise, x)


def augment(x: torch.Tensor, max_shift: int, hflip: bool, generator: torch.Generator, erase_p: float = 0.0) -> torch.Tensor:
    """Random shifts of up to ``max_shift`` pixels on each axis (pad-and-crop), random horizontal flips,
    then random erasing with probability ``erase_p``."""
    n = len(x)
    if max_shift > 0:
        dy, dx = torch.randint(-max_shift, max_shift + 1, (2, n), generator=generator, device=x.device)
        x = shift(x, dy, dx)
    if hflip:
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if erase_p > 0:
        x = erase(x, erase_p, generator)
    return x


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 7919 + 1) % 2**63)
