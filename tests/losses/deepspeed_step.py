"""One disposal step (GC + SRC-KD, fused as the dispose stage runs it) through a DeepSpeed engine and through plain
PyTorch, per ZeRO stage and per GC execution: the CNN is batched (all chunks in one forward), the ViT goes chunk by
chunk.

Run as `python deepspeed_step.py <world> <out.pt>`; each rank gets its part of the batch and 2 // world GC
chunks, so c = 2 either way.
"""
from __future__ import annotations

import copy
import os
import sys

import torch

from trd.losses import frozen_teacher
from trd.losses.disposal_step import DisposalStep
from trd.models import build_model
from trd.models.source_view import WithSourceHead

LR = 0.1
CFG = {"method": "gc", "retain": "src-kd", "lam": 0.5, "temperature": 2.0, "chunks": 2}


HVPS = ("exact", "finite_difference")
ARCHITECTURES = {"cnn": {"width": 4}, "vit": {"depth": 1, "width": 8, "heads": 2, "patch": 4}}


def _module(arch: str) -> WithSourceHead:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, image_size=8, **ARCHITECTURES[arch])
    return WithSourceHead(model, torch.nn.Linear(model.feature_dim, 5))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)


def plain_step(arch: str, hvp: str = "exact") -> dict[str, torch.Tensor]:
    """The reference, written out: GC over the two halves as 2 chunks (equal to 2 ranks x 1 chunk), SRC-KD of each
    half forwarded on its own (as on a rank, and as the fused step reads it off GC's chunk-wise forward), averaged."""
    from trd.losses import dtl_objective, gradient_collision_loss, retaining_loss

    module = _module(arch)
    teacher = frozen_teacher(module)
    x, y = _batch()
    gc = gradient_collision_loss(module.source, x, y, chunks=2, hvp=hvp)
    kd = sum(retaining_loss("src-kd", module.source(xh), teacher_logits=teacher.source(xh).detach(),
                            temperature=CFG["temperature"]) for xh in x.chunk(2)) / 2
    loss = dtl_objective(kd, gc, CFG["lam"])
    loss.backward()
    with torch.no_grad():
        return {n: p - LR * p.grad for n, p in module.named_parameters()}


def deepspeed_step(zero_stage: int, arch: str, hvp: str = "exact") -> dict[str, torch.Tensor]:
    import deepspeed

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    module = _module(arch)
    teacher = frozen_teacher(copy.deepcopy(module))
    x, y = _batch()
    x, y = x.chunk(world)[rank], y.chunk(world)[rank]
    config = {"train_micro_batch_size_per_gpu": len(x), "train_batch_size": len(x) * world,
              "gradient_accumulation_steps": 1, "zero_optimization": {"stage": zero_stage},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "gradient_clipping": 0.0}
    engine, *_ = deepspeed.initialize(model=module, optimizer=torch.optim.SGD(module.parameters(), lr=LR),
                                      config=config, dist_init_required=False)
    step = DisposalStep({**CFG, "chunks": 2 // world, "hvp": hvp}, teacher, None, seed=0)
    loss, _ = step(engine, x, y, 0)
    engine.backward(loss)
    engine.step()
    return {n: p.detach().clone() for n, p in engine.module.named_parameters()}


def run(out: str) -> None:
    from trd.engine.distributed import (
        detect_env,
        init_distributed,
        shutdown_distributed,
    )

    init_distributed(detect_env())
    results = {(arch, stage, hvp): deepspeed_step(stage, arch, hvp)
               for arch in ARCHITECTURES for stage in (0, 1, 2) for hvp in HVPS}
    if int(os.environ["RANK"]) == 0:
        torch.save(results, out)
    shutdown_distributed()


def _spawned(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run(out)


if __name__ == "__main__":
    from trd.engine.distributed import free_port

    world, out = int(sys.argv[1]), sys.argv[2]
    torch.multiprocessing.spawn(_spawned, args=(world, free_port(), out), nprocs=world, join=True)
