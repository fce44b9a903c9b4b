"""One Reverse-MAML meta step through a DeepSpeed engine (tasks spread over the ranks) and through plain
PyTorch (all tasks in one process), per ZeRO stage.

Run as `python meta_deepspeed_step.py <world> <out.pt>`: rank r takes tasks r, r + world, ...; DeepSpeed
averages the ranks' gradients, which is the mean over all tasks when every rank has as many.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.deepspeed_ranks
from tests.deepspeed_ranks import main, parameters, sgd_engine  # noqa: E402
from trd.meta.inner import InnerOptimizer
from trd.meta.maml import Task, meta_gradient, meta_loss
from trd.models import build_model

LR = 0.1
INNER = InnerOptimizer("momentum", lr=0.05)
STEPS = 2


def _model():
    torch.manual_seed(0)
    return build_model("cnn", num_classes=3, image_size=8, width=4)


def _tasks() -> list[Task]:
    g = torch.Generator().manual_seed(1)

    def batch():
        return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)

    return [Task(batch(), batch(), weight) for weight in (1.0, -0.5, 1.0, -0.5)]


def plain_step() -> dict[str, torch.Tensor]:
    model = _model()
    _, grads = meta_gradient(model, _tasks(), STEPS, INNER)
    with torch.no_grad():
        return {n: p - LR * grads[n] for n, p in model.named_parameters()}


def deepspeed_step(zero_stage: int) -> dict[str, torch.Tensor]:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    engine = sgd_engine(_model(), LR, micro_batch=4, zero_stage=zero_stage)
    mine = _tasks()[rank::world]
    engine.backward(meta_loss(engine.module, mine, STEPS, INNER))
    engine.step()
    return parameters(engine)


if __name__ == "__main__":
    main(deepspeed_step, stages=(0, 1, 2))
