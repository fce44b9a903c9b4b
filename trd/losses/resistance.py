"""Losses of a fine-tuned attacker's predictions that the non-fine-tunable disposal minimises. Each is bounded
below, so minimising it cannot run off to infinity the way ascending the attacker's cross-entropy can: inverse
cross-entropy -log(1 - p_y) >= 0 (SOPHON's), KL(uniform || p) >= 0 and negative entropy >= -log K. Inverse
cross-entropy is computed from the logits as logsumexp over the wrong classes minus logsumexp over all of them,
which stays finite even where p_y rounds to 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trd.losses.unlearning import uniform_kl_loss

RESISTANCE_LOSSES = ("inverse-ce", "kl-uniform", "neg-entropy")


def inverse_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Batch mean of -log(1 - p_y): 0 when the true class has no probability, large when it has all of it."""
    wrong = logits.masked_fill(F.one_hot(targets, logits.shape[-1]).bool(), float("-inf"))
    return (torch.logsumexp(logits, dim=-1) - torch.logsumexp(wrong, dim=-1)).mean()


def negative_entropy(logits: Tensor) -> Tensor:
    """Batch mean of sum_k p_k log p_k, minimal (-log K) at the uniform prediction."""
    log_p = F.log_softmax(logits, dim=-1)
    return (log_p.exp() * log_p).sum(dim=-1).mean()


def resistance_loss(kind: str, logits: Tensor, targets: Tensor) -> Tensor:
    if kind == "inverse-ce":
        return inverse_cross_entropy(logits, targets)
    if kind == "kl-uniform":
        return uniform_kl_loss(logits)
    if kind == "neg-entropy":
        return negative_entropy(logits)
    raise ValueError(f"unknown resistance loss {kind!r}: use one of {', '.join(RESISTANCE_LOSSES)}")
