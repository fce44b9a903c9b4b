"""A differentiable inner loop: k optimiser steps on a dictionary of parameters, each update kept in the
autograd graph, so that a loss after the loop differentiates back to the starting parameters (second order)
or, with the inner gradients detached, gives the first-order approximation. The model is called through
torch.func.functional_call, so the loop copies no module; the inner objective is any function of the
parameters. SGD, SGD with momentum and Adam are differentiated through their update rules as torch.optim
defines them (Adam without weight decay or amsgrad)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Params = dict[str, torch.Tensor]

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(frozen=True)
class InnerOptimizer:
    name: str = "sgd"  # sgd | momentum | adam
    lr: float = 0.01
    momentum: float = 0.9  # momentum
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    eps: float = 1e-8  # adam

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"inner optimiser {self.name!r} is not one of {', '.join(OPTIMIZERS)}")


class _SafeSqrt(torch.autograd.Function):
    """sqrt whose derivative at 0 is 0 instead of inf: Adam's second moment is exactly 0 where a gradient entry
    is (a dead ReLU, an unused row), and inf times the zero that flows back there would be NaN. The value is
    sqrt's, so the update is Adam's to the bit."""

    @staticmethod
    def forward(ctx, x):
        root = x.sqrt()
        ctx.save_for_backward(root)
        return root

    @staticmethod
    def backward(ctx, grad):
        (root,) = ctx.saved_tensors
        return torch.where(root > 0, grad / (2 * root.clamp_min(torch.finfo(root.dtype).tiny)), torch.zeros_like(grad))


def _step(params: Params, grads: list[torch.Tensor], opt: InnerOptimizer, state: dict, t: int) -> Params:
    out = {}
    for (name, p), g in zip(params.items(), grads):
        if opt.name == "sgd":
            out[name] = p - opt.lr * g
        elif opt.name == "momentum":  # torch.optim.SGD: buf = momentum * buf + g, the first buf being g
            buf = g if t == 1 else opt.momentum * state[name] + g
            state[name] = buf
            out[name] = p - opt.lr * buf
        else:
            b1, b2 = opt.betas
            m = (1 - b1) * g if t == 1 else b1 * state[name][0] + (1 - b1) * g
            v = (1 - b2) * g * g if t == 1 else b2 * state[name][1] + (1 - b2) * g * g
            state[name] = (m, v)
            denom = _SafeSqrt.apply(v / (1 - b2 ** t)) + opt.eps
            out[name] = p - (opt.lr / (1 - b1 ** t)) * m / denom
    return out


def adapt(params: Params, inner_loss: Callable[[Params, int], torch.Tensor], steps: int, opt: InnerOptimizer,
          second_order: bool = True) -> Params:
    """The parameters after `steps` updates of `opt` on inner_loss(params, step) (step counts from 0, so the
    objective may draw a new batch per step). With second_order the result is a differentiable function of
    `params`; without it the inner gradients are constants and d(result)/d(params) is the identity."""
    if steps < 1:
        raise ValueError(f"an inner loop needs at least one step, got {steps}")
    state: dict = {}
    for t in range(steps):
        loss = inner_loss(params, t)
        # retain_graph: a starting point computed from outside parameters (a prototype head from the body's
        # features) is shared by every step's graph, and the outer backward still runs through it.
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order, retain_graph=True,
                                    allow_unused=True, materialize_grads=True)
        if not second_order:
            grads = [g.detach() for g in grads]
        params = _step(params, list(grads), opt, state, t + 1)
    return params
