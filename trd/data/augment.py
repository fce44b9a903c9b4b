"""Batch-level train augmentation and normalisation, seeded per batch so a resumed epoch repeats it."""

from __future__ import annotations

import torch


def crop_padding(image_size: int) -> int:
    # CIFAR's classic 4 pixels at 32px, scaled with the image.
    return max(1, image_size // 8)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zero-padded random crop (same size) and horizontal flip of a uint8 [B,3,H,W] batch."""
    b, _, h, w = images.shape
    pad = crop_padding(h)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    # One gather instead of a Python loop: per-sample row/column indices into the padded batch.
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, 3, h, w + 2 * pad)
    cropped = padded.gather(2, rows)
    cols = dx[:, None] + torch.arange(w)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :].expand(b, 3, h, w)
    return cropped.gather(3, cols)


def normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [B,3,H,W] to float32, scaled to [0,1] then (x - mean) / std per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float().div_(255.0) - m) / s
