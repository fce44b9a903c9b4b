"""The target-agnostic attack (Rezaei & Liu, ICLR 2020) as Renofeation evaluates it: the attacker owns only the
public pretrained model, pushes its penultimate features toward m * e_1 (one neuron driven to m), and hopes the
transferred model, which it never sees, inherits the weakness. Success is counted on what the transferred model
classified right when clean."""
from __future__ import annotations

from collections.abc import Callable

import torch


def feature_target_objective(features: Callable[[torch.Tensor], torch.Tensor], magnitude: float, neuron: int = 0):
    """Per-sample -||features(x) - magnitude * e_neuron||^2: ascending it drives the features to the target."""

    def objective(images: torch.Tensor) -> torch.Tensor:
        f = features(images).flatten(1)
        target = torch.zeros_like(f)
        target[:, neuron] = magnitude
        return -(f - target).pow(2).sum(1)

    return objective


def attack_success(clean_correct: torch.Tensor, adversarial_correct: torch.Tensor) -> tuple[int, int]:
    """(attacks that succeeded, attacks counted): samples right when clean and wrong when perturbed, out of the
    samples right when clean. ASR = the first over the second."""
    counted = clean_correct.bool()
    return int((counted & ~adversarial_correct.bool()).sum()), int(counted.sum())
