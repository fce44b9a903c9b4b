"""Retaining losses of the paper's baselines: knowledge distillation or target cross-entropy.

SRC-KD (the paper's default) distils the frozen transfer-learned model theta_tl into the model
being disposed of on *source* data; TGT-KD does the same on target data; TGT-CE fits the target
labels.  TGT-A-GEM is not a loss but a gradient projection: see :mod:`trd.losses.agem`.
"""

from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn

RETAINING_LOSSES = ("src-kd", "tgt-kd", "tgt-ce")


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch.

    The T^2 factor keeps the gradient scale independent of the temperature (Hinton et al.).
    ``teacher_logits`` are treated as constants.
    """
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be positive, got {temperature}")
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (theta_tl) in eval mode with every parameter frozen, for the KD losses."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def retaining_loss(
    kind: str,
    student_logits: Tensor,
    targets: Tensor | None = None,
    teacher_logits: Tensor | None = None,
    temperature: float | None = None,
) -> Tensor:
    """Dispatch a retaining baseline by its config name; the caller picks source or target data.

    ``"src-kd"``/``"tgt-kd"`` need ``teacher_logits`` and ``temperature``; ``"tgt-ce"`` needs
    ``targets``.
    """
    if kind in ("src-kd", "tgt-kd"):
        if teacher_logits is None or temperature is None:
            raise ValueError(f"retaining loss {kind!r} needs teacher_logits and temperature")
        return distillation_loss(student_logits, teacher_logits, temperature)
    if kind == "tgt-ce":
        if targets is None:
            raise ValueError("retaining loss 'tgt-ce' needs the target labels")
        return F.cross_entropy(student_logits, targets)
    if kind == "tgt-agem":
        raise ValueError("'tgt-agem' is a gradient projection, not a loss: use trd.losses.agem")
    raise ValueError(f"unknown retaining loss {kind!r}; choose one of {', '.join(RETAINING_LOSSES)} or 'tgt-agem'")
