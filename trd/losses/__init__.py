"""Losses of the disposal stage: gradient collision (GC/NGC) and the paper's baselines."""

from trd.losses.agem import agem_project, agem_project_grads_
from trd.losses.finite import NonFiniteError, check_finite
from trd.losses.gradient_collision import GCStats, gradient_collision_loss
from trd.losses.objective import dtl_objective
from trd.losses.retaining import (
    RETAINING_LOSSES,
    distillation_loss,
    frozen_teacher,
    retaining_loss,
)
from trd.losses.unlearning import (
    UNLEARNING_LOSSES,
    negative_ce_loss,
    random_label_loss,
    uniform_kl_loss,
    unlearning_loss,
)

__all__ = [
    "GCStats",
    "NonFiniteError",
    "RETAINING_LOSSES",
    "UNLEARNING_LOSSES",
    "agem_project",
    "agem_project_grads_",
    "check_finite",
    "distillation_loss",
    "dtl_objective",
    "frozen_teacher",
    "gradient_collision_loss",
    "negative_ce_loss",
    "random_label_loss",
    "retaining_loss",
    "uniform_kl_loss",
    "unlearning_loss",
]
