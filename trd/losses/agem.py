"""A-GEM projection (Chaudhry et al., 2019) for the TGT-A-GEM baseline.

The unlearning gradient g is kept unless it conflicts with the reference gradient g_ref of the
target loss (g . g_ref < 0); then it is replaced by its projection onto the half-space that does
not increase the target loss to first order: g - (g . g_ref / |g_ref|^2) g_ref.
Gradients are handled as per-parameter lists (one flat tensor is a list of one), so nothing is
concatenated; the stage calls :func:`agem_project_grads_` after the unlearning backward.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def agem_project(grads: Sequence[Tensor] | Tensor, ref_grads: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """Projected copy of ``grads`` (a tensor or per-parameter list) against ``ref_grads``."""
    grads = [grads] if isinstance(grads, Tensor) else list(grads)
    ref_grads = [ref_grads] if isinstance(ref_grads, Tensor) else list(ref_grads)
    if len(grads) != len(ref_grads):
        raise ValueError(f"A-GEM got {len(grads)} gradients but {len(ref_grads)} reference gradients")
    dot = _dot(grads, ref_grads)
    ref_sq = _dot(ref_grads, ref_grads)
    # A zero reference gradient constrains nothing.
    coefficient = torch.where((dot < 0) & (ref_sq > 0), dot / ref_sq.clamp_min(torch.finfo(ref_sq.dtype).tiny), 0.0)
    return [g - coefficient * r for g, r in zip(grads, ref_grads)]


def agem_project_grads_(params: Iterable[Tensor], ref_grads: Sequence[Tensor | None]) -> None:
    """Project the ``.grad`` of ``params`` in place; ``ref_grads[i]`` belongs to the i-th parameter.

    A missing ``.grad`` or a ``None`` reference gradient counts as zero; a parameter without
    ``.grad`` is given the projected gradient.
    """
    params = list(params)
    if len(params) != len(ref_grads):
        raise ValueError(f"A-GEM got {len(params)} parameters but {len(ref_grads)} reference gradients")
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    refs = [r if r is not None else torch.zeros_like(p) for p, r in zip(params, ref_grads)]
    for p, projected in zip(params, agem_project(grads, refs)):
        if p.grad is None:
            p.grad = projected
        else:
            p.grad.copy_(projected)
