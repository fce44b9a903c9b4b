"""One Reverse-MAML meta step through a DeepSpeed engine (tasks spread over the ranks) and through plain
PyTorch (all tasks in one process), per ZeRO stage.

Run as `python meta_deepspeed_step.py <world> <out.pt>`: rank r takes tasks r, r + world, ...; DeepSpeed
averages the ranks' gradients, which is the mean over all tasks when every rank has as many.
"""
from __future__ import annotations

import os
import sys

import torch

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
    import deepspeed

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    model = _model()
    config = {"train_micro_batch_size_per_gpu": 4, "train_batch_size": 4 * world, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": zero_stage}, "zero_allow_untested_optimizer": True,
              "steps_per_print": 10**9, "gradient_clipping": 0.0}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                                      config=config, dist_init_required=False)
    mine = _tasks()[rank::world]
    engine.backward(meta_loss(engine.module, mine, STEPS, INNER))
    engine.step()
    return {n: p.detach().clone() for n, p in engine.module.named_parameters()}


def _spawned(rank: int, world: int, port: int, out: str) -> None:
    from trd.engine.distributed import (
        detect_env,
        init_distributed,
        shutdown_distributed,
    )

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed(detect_env())
    results = {stage: deepspeed_step(stage) for stage in (0, 1, 2)}
    if rank == 0:
        torch.save(results, out)
    shutdown_distributed()


if __name__ == "__main__":
    from trd.engine.distributed import free_port

    world, out = int(sys.argv[1]), sys.argv[2]
    torch.multiprocessing.spawn(_spawned, args=(world, free_port(), out), nprocs=world, join=True)
