"""Reverse-MAML (Yang & Seeyave, 2023) as one loss on a beneficial batch and a malicious batch.

    loss = retain * CE(model, good)                        the released model must serve the beneficial task
         + good * CE(adapt(model, good support), good query)          MAML: fine-tunes well on good tasks
         - bad * min(CE(adapt(model + new head, bad support), bad query), cap)   and badly on bad ones

A malicious task is fine-tuned the way a free-rider would: through a new head, zero at the start of every task
(an attacker's head carries nothing over from the released one). The inner loops adapt every parameter
(attacker "full") or the head alone on the fixed body ("linear", the study's attacker). The ascended term is capped: past `cap` its
gradient is zero, so the ascent cannot run the loss, and the weights, off to infinity."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trd.meta.inner import InnerOptimizer, Params
from trd.meta.maml import Batch, Task, maml_objective


@dataclass(frozen=True)
class ReverseMamlWeights:
    retain: float = 1.0
    good: float = 1.0
    bad: float = 1.0
    cap: float | None = None  # None: 2 ln(malicious classes), twice a uniform guess's loss


class NewHead(nn.Module):
    """model's features under a new linear head: the simulated attacker's model."""

    def __init__(self, model: nn.Module, num_classes: int):
        super().__init__()
        self.model = model
        like = next(model.parameters())
        self.head = nn.Linear(model.feature_dim, num_classes, device=like.device, dtype=like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.features(x))


ATTACKERS = ("full", "linear")


def _split(params: Params, linear: bool) -> tuple[Params, Params | None]:
    """(what the inner loop adapts, what it holds fixed): the head alone under a linear attacker."""
    if not linear:
        return params, None
    return ({n: p for n, p in params.items() if n.startswith("head.")},
            {n: p for n, p in params.items() if not n.startswith("head.")})


def halves(batch: Batch) -> tuple[Batch, Batch]:
    """A batch as a task: the first half is its support set, the second its query set."""
    images, labels = batch
    if len(images) < 2:
        raise ValueError(f"a task needs at least 2 images (a support and a query half), got {len(images)}")
    half = len(images) // 2
    return (images[:half], labels[:half]), (images[half:], labels[half:])


def reverse_maml_loss(model: nn.Module, good: Batch, bad: Batch, bad_classes: int, steps: int,
                      opt: InnerOptimizer, weights: ReverseMamlWeights = ReverseMamlWeights(),
                      second_order: bool = True, attacker: str = "full") -> tuple[torch.Tensor, dict]:
    """The loss above for loss.backward() or a DeepSpeed engine. Inner loops differentiate views of the
    parameters (see trd.meta.maml.meta_loss), so gradient hooks fire once, in the outer backward."""
    if attacker not in ATTACKERS:
        raise ValueError(f"attacker {attacker!r} is not one of {', '.join(ATTACKERS)}")
    params: Params = {n: p.view_as(p) for n, p in model.named_parameters() if p.requires_grad}
    retain = F.cross_entropy(model(good[0]), good[1])
    loss, parts = weights.retain * retain, {"meta/retain": float(retain.detach())}
    linear = attacker == "linear"
    if weights.good:
        adapted, fixed = _split(params, linear)
        good_score = maml_objective(model, adapted, [Task(*halves(good))], steps, opt, second_order, fixed=fixed)
        loss = loss + weights.good * good_score
        parts["meta/good"] = float(good_score.detach())
    if weights.bad:
        new = NewHead(model, bad_classes)
        head = {f"head.{n}": torch.zeros_like(p, requires_grad=True) for n, p in new.head.named_parameters()}
        body = {f"model.{n}": p for n, p in params.items() if not n.startswith("head.")}
        adapted, fixed = (head, body) if linear else ({**body, **head}, None)
        bad_score = maml_objective(new, adapted, [Task(*halves(bad))], steps, opt, second_order, fixed=fixed)
        cap = weights.cap if weights.cap is not None else 2 * math.log(bad_classes)
        loss = loss - weights.bad * bad_score.clamp(max=cap)
        parts["meta/bad"] = float(bad_score.detach())
    return loss, parts

