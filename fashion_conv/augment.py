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


def augment(x: torch.Tensor, max_shift: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``max_shift`` pixels on each axis (pad-and-crop) and random horizontal flips."""
    n = len(x)
    if max_shift > 0:
        dy, dx = torch.randint(-max_shift, max_shift + 1, (2, n), generator=generator, device=x.device)
        x = shift(x, dy, dx)
    if hflip:
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 7919 + 1) % 2**63)
