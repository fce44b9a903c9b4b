"""Attacks on released models; membership inference on the source training data."""

from trd.attacks.features import SampleOutputs, collect_outputs, per_sample_grad_norms
from trd.attacks.mia import (
    AttackResult,
    balanced,
    classifier_attack,
    confidence_attack,
    entropy_attack,
    gradient_norm_attack,
    loss_attack,
    modified_entropy_attack,
    run_all,
    threshold_attack,
)

__all__ = [
    "AttackResult",
    "SampleOutputs",
    "balanced",
    "classifier_attack",
    "collect_outputs",
    "confidence_attack",
    "entropy_attack",
    "gradient_norm_attack",
    "loss_attack",
    "modified_entropy_attack",
    "per_sample_grad_norms",
    "run_all",
    "threshold_attack",
]
