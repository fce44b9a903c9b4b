"""CARTL's Feature Distance Minimisation term: how far the features at the transfer boundary (the input of the
last k blocks, the part an attacker of the transferred model can still move) travel under an adversarial
perturbation, per sample ||f(x) - f(x')||_2 / sqrt(d), averaged over the batch as the cross-entropy is.

Both feature maps keep their gradient: the paper's term pulls the clean and the adversarial features together.
"""
from __future__ import annotations

import math

import torch


def feature_distance(clean: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    if clean.shape != adversarial.shape:
        raise ValueError(f"feature_distance: shapes differ, {tuple(clean.shape)} and {tuple(adversarial.shape)}")
    diff = (clean - adversarial).flatten(1)
    return diff.norm(dim=1).mean() / math.sqrt(diff.shape[1])
