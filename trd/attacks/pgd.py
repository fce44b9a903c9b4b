"""L-inf projected gradient ascent (Madry et al.) on images in pixel space, whatever the model's input
normalisation: the loader hands out (pixels - mean) / std, so the attack maps a batch back to [0, 1] pixels,
steps and projects there (the eps-ball and the valid range are both boxes, so their intersection is a clamp), and
hands the model normalised images again. A budget given in normalised units (the target-agnostic attack's 0.4)
is the per-channel pixel budget eps * std.

Only the input needs a gradient, so each step is one forward and one backward to the images: no parameter
gradients are accumulated and no module is copied.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PixelSpace:
    """The map between a role's normalised images and [0, 1] pixels."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of_role(cls, role: dict) -> PixelSpace:
        return cls(tuple(float(v) for v in _triple(role.get("mean", 0.5))),
                   tuple(float(v) for v in _triple(role.get("std", 0.5))))

    def _view(self, values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return images * self._view(self.std, images) + self._view(self.mean, images)

    def to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self._view(self.mean, pixels)) / self._view(self.std, pixels)

    def pixel_budget(self, eps: float, like: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """eps as a per-channel pixel radius: eps itself, or eps * std when eps is in normalised units."""
        scale = self._view(self.std, like) if normalised else torch.ones_like(self._view(self.std, like))
        return eps * scale


def _triple(value) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return values * 3 if len(values) == 1 else values


def pgd_iterates(objective: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, space: PixelSpace, *,
                 eps: float, step: float, steps: int, random_start: bool = True, normalised_budget: bool = False,
                 generator: torch.Generator | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(t, normalised images) after each step t = 1..steps of the ascent of objective(model_images) -> per-sample
    values (summed, so each sample climbs its own), within eps (L-inf, pixels unless normalised_budget) of
    `images` and in [0, 1] pixels. PGD-20 is the 20th iterate of PGD-100 from the same start."""
    if steps < 0:
        raise ValueError(f"pgd: steps must be >= 0, got {steps}")
    clean = space.to_pixels(images.detach())
    radius = space.pixel_budget(eps, clean, normalised_budget)
    stride = space.pixel_budget(step, clean, normalised_budget)
    low, high = (clean - radius).clamp(0, 1), (clean + radius).clamp(0, 1)
    pixels = clean
    if random_start and eps > 0:
        noise = torch.rand(clean.shape, generator=generator, device="cpu", dtype=clean.dtype).to(clean.device)
        pixels = torch.max(torch.min(clean + (2 * noise - 1) * radius, high), low)
    if steps == 0:
        yield 0, space.to_model(pixels)
    for t in range(1, steps + 1):
        pixels = pixels.detach().requires_grad_(True)
        value = objective(space.to_model(pixels)).sum()
        (grad,) = torch.autograd.grad(value, pixels)
        pixels = torch.max(torch.min(pixels.detach() + stride * grad.sign(), high), low)
        yield t, space.to_model(pixels)


def pgd_linf(objective: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, space: PixelSpace,
             **settings) -> torch.Tensor:
    """The last iterate of pgd_iterates (same arguments)."""
    for _, adversarial in pgd_iterates(objective, images, space, **settings):
        pass
    return adversarial


def cross_entropy_objective(model: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor):
    """The untargeted attack's objective: each sample's cross-entropy at its true label."""
    return lambda images: F.cross_entropy(model(images), labels, reduction="none")
