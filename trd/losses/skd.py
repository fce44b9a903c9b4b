"""Selective knowledge distillation (SKD; Yang & Seeyave, 2023). The student copies a teacher's penultimate
features on beneficial images and drives the input of its last ReLU to a constant far below zero on malicious
images, so that what a new head sees of a malicious image is exactly zero, with a margin a little fine-tuning
does not cross. The study's student drops that ReLU; trd's models pool after it, so the student keeps the
architecture and regresses the ReLU's input instead, which is the same target for the same units."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def has_relu(model: nn.Module) -> bool:
    return any(isinstance(m, nn.ReLU) for m in model.modules())


@contextmanager
def relu_inputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside it, every nn.ReLU call of model appends its input to the yielded list, in call order: after a
    forward, the last entry is the pre-activation of the features' last ReLU (a module used twice, as
    ResNet's, is recorded at each call)."""
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def skd_loss(student: nn.Module, teacher_features: torch.Tensor, good: torch.Tensor, bad: torch.Tensor,
             constant: float, bad_weight: float = 1.0,
             bad_term: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
    """MSE(student features, teacher features) on the beneficial images `good` plus bad_weight x MSE(last ReLU
    input, constant) on the malicious images `bad`, each divided by its value at zero (the teacher features'
    mean square, constant^2): in raw units the malicious term outweighs the other by orders of magnitude and
    the student learns to zero every image (measured in bench/README.md). One forward of both, so BatchNorm
    normalises them together as it will at test time. bad_term(ReLU input, constant) replaces the malicious
    MSE (bench/skd_balance.py's hinge form); it is divided by constant^2 the same way."""
    with relu_inputs(student) as seen:
        features = student.features(torch.cat([good, bad]))
    if not seen:
        raise ValueError(f"{type(student).__name__} has no nn.ReLU: SKD needs features that follow a ReLU")
    n = len(good)
    pre = seen[-1]
    scale = teacher_features.pow(2).mean().clamp_min(1e-12)
    if pre.shape == features.shape:  # features = relu(pre): the beneficial term on the input, see below
        good_loss = _through_relu(pre[:n], teacher_features) / scale
    else:
        good_loss = F.mse_loss(features[:n], teacher_features) / scale
    bad_raw = (bad_term(pre[n:], constant) if bad_term is not None
               else F.mse_loss(pre[n:], torch.full_like(pre[n:], constant)))
    bad_loss = bad_raw / constant ** 2
    return good_loss + bad_weight * bad_loss, {"skd/good": float(good_loss.detach()),
                                               "skd/bad": float(bad_loss.detach())}


def _through_relu(pre: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE(relu(pre), target) for target >= 0, with a gradient where relu(pre) has none: a unit the malicious
    term has pushed below zero for a beneficial image is pulled back up to the teacher's value (with MSE on
    relu(pre), units die for every image and the student collapses to zero features: bench/README.md)."""
    active = target > 0
    return torch.where(active, (pre - target) ** 2, torch.relu(pre) ** 2).mean()


@torch.no_grad()
def misses(model: nn.Module, loader, device: torch.device) -> float:
    """The study's misses: the share of the loader's images whose features (after the last ReLU) are not all
    zero, i.e. that a new head can tell apart at all."""
    was_training = model.training
    model.eval()
    missed = total = 0
    for images, _ in loader:
        features = model.features(images.to(device))
        missed += int((features.flatten(1) != 0).any(dim=1).sum())
        total += len(images)
    model.train(was_training)
    if total == 0:
        raise ValueError("misses: the loader yielded no image")
    return missed / total
