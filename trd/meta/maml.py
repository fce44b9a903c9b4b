"""The (Reverse-)MAML objective: for each task, adapt the parameters on its support batch with a differentiable
inner loop (trd.meta.inner), score the adapted parameters on its query batch, and weight that score by the
task's signed weight: positive for a task the model should fine-tune well on (MAML), negative for one it
should fine-tune badly on (Reverse-MAML ascends those). The gradient of the mean with respect to the starting
parameters is the meta-gradient; an optimiser or the DeepSpeed engine steps on it.

BatchNorm inside the objective normalises with each call's batch statistics and leaves the running statistics
alone (trd.models.batchnorm.untracked_batchnorm): simulated fine-tuning runs must not move the statistics the
released model is evaluated with, and k inner steps would otherwise update them k + 1 times per task."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from trd.meta.inner import InnerOptimizer, Params, adapt
from trd.models.batchnorm import untracked_batchnorm

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Task:
    support: Batch  # what the simulated fine-tuning trains on
    query: Batch  # what the fine-tuned parameters are scored on
    weight: float = 1.0  # > 0: should fine-tune well; < 0: should fine-tune badly


def maml_objective(model: torch.nn.Module, params: Params, tasks: Sequence[Task], steps: int, opt: InnerOptimizer,
                   second_order: bool = True, loss: Callable = F.cross_entropy, fixed: Params | None = None) -> torch.Tensor:
    """The inner loops adapt `params`; `fixed` holds parameters they leave alone (a frozen body under a linear
    probe), still differentiable from the outside."""
    if not tasks:
        raise ValueError("a meta step needs at least one task")
    buffers = {**dict(model.named_buffers()), **(fixed or {})}

    def forward(p: Params, images: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), (images,))

    total = None
    with untracked_batchnorm(model):
        for task in tasks:
            images, labels = task.support
            adapted = adapt(params, lambda p, _: loss(forward(p, images), labels), steps, opt, second_order)
            scored = task.weight * loss(forward(adapted, task.query[0]), task.query[1])
            total = scored if total is None else total + scored
    return total / len(tasks)


def meta_loss(model: torch.nn.Module, tasks: Sequence[Task], steps: int, opt: InnerOptimizer,
              second_order: bool = True) -> torch.Tensor:
    """The objective as a loss for loss.backward() or a DeepSpeed engine's backward. The inner loops
    differentiate views of the parameters, not the parameters: hooks on a parameter fire whenever a gradient
    with respect to it is computed, and DeepSpeed ZeRO's gradient partitioning would otherwise run inside
    every inner step. Through the views they fire once, in the outer backward."""
    params = {n: p.view_as(p) for n, p in model.named_parameters() if p.requires_grad}
    return maml_objective(model, params, tasks, steps, opt, second_order)


def meta_gradient(model: torch.nn.Module, tasks: Sequence[Task], steps: int, opt: InnerOptimizer,
                  second_order: bool = True) -> tuple[torch.Tensor, Params]:
    """(objective, its gradient for every trainable parameter of model), without touching model.grad."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    objective = maml_objective(model, params, tasks, steps, opt, second_order)
    grads = torch.autograd.grad(objective, list(params.values()), allow_unused=True, materialize_grads=True)
    return objective.detach(), dict(zip(params, grads))
