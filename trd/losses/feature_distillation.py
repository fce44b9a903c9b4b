"""The LwF-style feature distillation of end-to-end robust transfer (Shafahi et al., ICLR 2020): the transferred
model's penultimate features held near the frozen source model's on the target images, mean over the batch of
the squared L2 distance per sample."""
from __future__ import annotations

import torch


def feature_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if student.shape != teacher.shape:
        raise ValueError(f"feature_distillation: shapes differ, {tuple(student.shape)} and {tuple(teacher.shape)}")
    return (student - teacher.detach()).flatten(1).pow(2).sum(1).mean()
