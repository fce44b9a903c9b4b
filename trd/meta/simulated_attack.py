"""The simulated free-rider of the non-fine-tunable disposal: an attacker drawn from a configured distribution
(optimiser, log-uniform learning rate, inner steps, full fine-tuning or a linear probe) fine-tunes the released
body under a fresh head (randomly initialised, or the nearest-class-mean classifier of the attacker's batches,
an attacker that is strong before its first step) on a stream of source batches, and the adapted model is scored on
a query batch by a score of its logits (the disposal's bounded resistance losses, trd.losses.resistance). The
score differentiates back to the released body through the inner loop (trd.meta.inner): second-order for short
loops, first-order (the inner gradients taken as constants) for long ones. Inner loops run on views of the parameters with BatchNorm's running
statistics untouched, as in trd.meta.maml."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from trd.meta.inner import InnerOptimizer, Params, adapt
from trd.models.batchnorm import untracked_batchnorm

Batch = tuple[torch.Tensor, torch.Tensor]
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> loss
MODES = ("full", "linear")
OPTIMIZERS = ("momentum", "adam")
HEADS = ("random", "prototype")
ABSENT_CLASS_BIAS = -1e4  # a prototype head's logit offset for a class none of the attacker's images has


@dataclass(frozen=True)
class AttackerDistribution:
    lr: Mapping[str, tuple[float, float]]  # optimiser -> [low, high] of a log-uniform learning rate
    steps: tuple[int, int] = (1, 8)  # inner steps, uniform over the integers in [low, high]
    linear_share: float = 0.5  # probability of a linear probe (else full fine-tuning)
    second_order_steps: int = 1  # loops of at most this many steps are differentiated second-order
    momentum: float = 0.9
    head: str = "random"  # random | prototype: how each attacker's fresh head starts

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"simulated attacker head {self.head!r}: use one of {', '.join(HEADS)}")
        unknown = sorted(set(self.lr) - set(OPTIMIZERS))
        if not self.lr or unknown:
            raise ValueError(f"simulated attacker optimisers {sorted(self.lr)}: use some of {', '.join(OPTIMIZERS)}")
        for name, (low, high) in self.lr.items():
            if not 0 < low <= high:
                raise ValueError(f"learning-rate range of {name} [{low}, {high}] must have 0 < low <= high")
        if not 1 <= self.steps[0] <= self.steps[1]:
            raise ValueError(f"inner steps {list(self.steps)} must be [low, high] with 1 <= low <= high")

    def summary(self) -> dict:
        """What a report needs to tell seen attackers from unseen ones."""
        modes = [m for m, share in (("full", 1 - self.linear_share), ("linear", self.linear_share)) if share > 0]
        return {"optimizers": {k: [float(v) for v in r] for k, r in self.lr.items()}, "modes": modes,
                "steps": [int(s) for s in self.steps], "second_order_steps": int(self.second_order_steps),
                "head": self.head}


@dataclass(frozen=True)
class SimulatedAttacker:
    optimizer: InnerOptimizer
    steps: int
    mode: str
    second_order: bool
    head: str = "random"


def sample_attacker(dist: AttackerDistribution, generator: torch.Generator) -> SimulatedAttacker:
    def uniform() -> float:
        return float(torch.rand((), generator=generator))

    names = sorted(dist.lr)
    name = names[min(int(uniform() * len(names)), len(names) - 1)]
    low, high = dist.lr[name]
    lr = math.exp(math.log(low) + uniform() * (math.log(high) - math.log(low)))
    steps = int(torch.randint(dist.steps[0], dist.steps[1] + 1, (), generator=generator))
    mode = "linear" if uniform() < dist.linear_share else "full"
    optimizer = InnerOptimizer(name, lr=lr, momentum=dist.momentum)
    return SimulatedAttacker(optimizer, steps, mode, second_order=steps <= dist.second_order_steps, head=dist.head)


class _Features(nn.Module):
    """The released body's features, as a module whose forward functional_call can run on outside parameters."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.features(x)


class _Probe(nn.Module):
    """The attacker's model: the released body's features under a new head (its parameters come from outside)."""

    def __init__(self, body: nn.Module, head: nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.features(x))


def fresh_head(feature_dim: int, num_classes: int, like: torch.Tensor, generator: torch.Generator) -> Params:
    """nn.Linear's default initialisation, U(-1/sqrt(d), 1/sqrt(d)), drawn from generator (on the CPU, so a seed
    gives the same head on any device)."""
    bound = 1 / math.sqrt(feature_dim)

    def draw(*shape):
        t = torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 * bound - bound
        return t.to(like).requires_grad_(True)

    return {"head.weight": draw(num_classes, feature_dim), "head.bias": draw(num_classes)}


def prototype_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Params:
    """The linear head of the nearest-class-mean classifier: argmax_c of w_c . f + b_c with w_c the mean feature
    of class c and b_c = -|w_c|^2 / 2 is argmin_c |f - w_c|; a class without an image is never predicted."""
    onehot = nn.functional.one_hot(labels, num_classes).to(features.dtype)
    counts = onehot.sum(0)
    means = onehot.T @ features / counts.clamp_min(1).unsqueeze(1)
    bias = torch.where(counts > 0, -0.5 * (means * means).sum(1), torch.full_like(counts, ABSENT_CLASS_BIAS))
    return {"head.weight": means, "head.bias": bias}


def attacked_loss(body: nn.Module, attacker: SimulatedAttacker, inner_batch: Callable[[int], Batch], query: Batch,
                  num_classes: int, score: Score, generator: torch.Generator, params: Params | None = None,
                  double_backward: Callable = contextlib.nullcontext) -> tuple[torch.Tensor, dict]:
    """score(logits on query, query labels) of `body` after `attacker` fine-tuned it on inner_batch(0..steps-1).

    body is a TrdModel (features, feature_dim, head); its own head takes no part. params: the body's parameters to
    differentiate (default: views of its trainable ones, so DeepSpeed's gradient hooks fire once, in the outer
    backward). double_backward: a context for second-order loops (the disposal passes trd's hand-written
    convolution and BatchNorm double backwards, bench/README.md, "Meta step")."""
    if params is None:
        params = {n: p.view_as(p) for n, p in body.named_parameters() if p.requires_grad}
    like = next(iter(params.values()))
    body_params = {f"body.{n}": p for n, p in params.items() if not n.startswith("head.")}
    probe = _Probe(body, nn.Linear(body.feature_dim, num_classes, device="meta"))
    buffers = {f"body.{n}": b for n, b in body.named_buffers()}

    def starting_head() -> Params:
        if attacker.head == "random":
            return fresh_head(body.feature_dim, num_classes, like, generator)
        images, labels = zip(*(inner_batch(t) for t in range(attacker.steps)))
        features = functional_call(_Features(body), (body_params, buffers), (torch.cat(images),))
        return prototype_head(features, torch.cat(labels), num_classes)

    def forward(p: Params, images: torch.Tensor) -> torch.Tensor:
        return functional_call(probe, ({**fixed, **p}, buffers), (images,))

    def inner_loss(p: Params, t: int) -> torch.Tensor:
        images, labels = inner_batch(t)
        return nn.functional.cross_entropy(forward(p, images), labels)

    second_order = double_backward if attacker.second_order else contextlib.nullcontext
    with untracked_batchnorm(body), second_order():
        head = starting_head()
        adapted, fixed = (head, body_params) if attacker.mode == "linear" else ({**body_params, **head}, {})
        adapted = adapt(adapted, inner_loss, attacker.steps, attacker.optimizer, attacker.second_order)
        logits = forward(adapted, query[0])
    value = score(logits, query[1])
    accuracy = float((logits.detach().argmax(-1) == query[1]).float().mean())
    return value, {"nft/attacked_acc": 100 * accuracy, "nft/inner_steps": attacker.steps,
                   "nft/log10_lr": math.log10(attacker.optimizer.lr)}
