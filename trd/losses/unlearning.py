"""Unlearning losses of the paper's baselines (Koh et al., ICCV 2023, eqs. 11-13).

Each takes the logits of the model being disposed of on source data and is minimised to make
the source task unusable: RAND fits uniformly random labels, UNIF pulls the prediction towards
the uniform distribution, NEG ascends the source cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

UNLEARNING_LOSSES = ("rand", "unif", "neg")


def random_label_loss(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """RAND: mean cross-entropy to labels drawn uniformly at random, afresh on every call.

    Labels are drawn on the generator's device (CPU when ``generator`` is None) and moved to
    the logits' device, so a seeded CPU generator gives the same labels on any accelerator.
    """
    batch, classes = logits.shape[0], logits.shape[-1]
    device = generator.device if generator is not None else torch.device("cpu")
    labels = torch.randint(classes, (batch,), generator=generator, device=device)
    return F.cross_entropy(logits, labels.to(logits.device))


def uniform_kl_loss(logits: Tensor) -> Tensor:
    """UNIF: batch mean of KL(uniform || softmax(logits)) = -log K - mean_k log p_k."""
    classes = logits.shape[-1]
    return -math.log(classes) - F.log_softmax(logits, dim=-1).mean(dim=-1).mean()


def negative_ce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """NEG: the negated mean cross-entropy of the true source labels (gradient ascent)."""
    return -F.cross_entropy(logits, targets)


def unlearning_loss(
    kind: str, logits: Tensor, targets: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Dispatch a baseline by its config name: ``"rand"``, ``"unif"`` or ``"neg"``."""
    if kind == "rand":
        return random_label_loss(logits, generator)
    if kind == "unif":
        return uniform_kl_loss(logits)
    if kind == "neg":
        return negative_ce_loss(logits, targets)
    raise ValueError(
        f"unknown unlearning loss {kind!r}; choose one of {', '.join(UNLEARNING_LOSSES)} "
        "(GC/NGC go through gradient_collision_loss)"
    )
