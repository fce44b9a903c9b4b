"""One CARTL adversarial training step (PGD + Feature Distance Minimisation) through a DeepSpeed engine, each rank
on its half of the batch, and in one plain PyTorch process over both halves (the mean of their losses, each half
with the random start its rank draws).

Run as `python adversarial_deepspeed_step.py <world> <out.pt>`.
"""
from __future__ import annotations

import os
import sys

import torch

from trd.attacks.pgd import PixelSpace
from trd.losses.adversarial import PgdSettings, adversarial_training_loss
from trd.models import build_model

LR = 0.1
SPACE = PixelSpace((0.5,) * 3, (0.5,) * 3)
PGD = PgdSettings(eps=8 / 255, step=2 / 255, steps=3)
LAM = 0.5
HALF = 4


def _model():
    torch.manual_seed(0)
    return build_model("cnn", num_classes=3, image_size=8, width=4)


def _halves():
    g = torch.Generator().manual_seed(1)
    images = SPACE.to_model(torch.rand(2 * HALF, 3, 8, 8, generator=g))
    labels = torch.randint(0, 3, (2 * HALF,), generator=g)
    return [(images[r * HALF:(r + 1) * HALF], labels[r * HALF:(r + 1) * HALF]) for r in range(2)]


def _loss(module, rank):
    images, labels = _halves()[rank]
    loss, _ = adversarial_training_loss(module, images, labels, SPACE, PGD, lam=LAM, boundary=module.block_names[-2],
                                        generator=torch.Generator().manual_seed(100 + rank))
    return loss


def plain_step() -> dict[str, torch.Tensor]:
    model = _model().train()
    loss = (_loss(model, 0) + _loss(model, 1)) / 2
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        return {n: p - LR * g for (n, p), g in zip(model.named_parameters(), grads)}


def deepspeed_step(zero_stage: int) -> dict[str, torch.Tensor]:
    import deepspeed

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    model = _model()
    config = {"train_micro_batch_size_per_gpu": HALF, "train_batch_size": HALF * world,
              "gradient_accumulation_steps": 1, "zero_optimization": {"stage": zero_stage},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "gradient_clipping": 0.0}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                                      config=config, dist_init_required=False)
    engine.train()
    engine.backward(_loss(engine.module, rank))
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
    results = {stage: deepspeed_step(stage) for stage in (0, 2)}
    if rank == 0:
        torch.save(results, out)
    shutdown_distributed()


if __name__ == "__main__":
    from trd.engine.distributed import free_port

    world, out = int(sys.argv[1]), sys.argv[2]
    torch.multiprocessing.spawn(_spawned, args=(world, free_port(), out), nprocs=world, join=True)
