"""Feature distillation from a frozen model, the squared L2 distance per sample averaged over the batch: of the
penultimate features (the LwF-style term of end-to-end robust transfer, Shafahi et al., ICLR 2020), or summed
over chosen blocks' outputs (Renofeation's, and DELTA's without its attention weights)."""
from __future__ import annotations

import torch


def feature_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if student.shape != teacher.shape:
        raise ValueError(f"feature_distillation: shapes differ, {tuple(student.shape)} and {tuple(teacher.shape)}")
    return (student - teacher.detach()).flatten(1).pow(2).sum(1).mean()


def block_distillation(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Renofeation's (and DELTA's unweighted) feature distillation: over the named blocks, the sum of the squared
    differences of their outputs per sample, averaged over the batch; the teacher's outputs carry no gradient."""
    if not student or student.keys() != teacher.keys():
        raise ValueError(f"block_distillation: the student's blocks {sorted(student)} and the teacher's "
                         f"{sorted(teacher)} must be the same non-empty set")
    return sum(feature_distillation(student[name], teacher[name]) for name in student)
