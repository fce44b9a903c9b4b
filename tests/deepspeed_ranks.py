"""One optimiser step through a DeepSpeed engine on several gloo ranks, for the tests that compare it with the
same step in one plain process: `main()` of a script run as `python <script> <world> <out.pt>` spawns the ranks,
each runs step(zero_stage) -> parameters for every ZeRO stage asked, and rank 0 saves {stage: parameters}."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

import torch


def sgd_engine(model: torch.nn.Module, lr: float, micro_batch: int, zero_stage: int):
    """A DeepSpeed engine over plain SGD, one micro-batch per rank and step."""
    import deepspeed

    world = int(os.environ["WORLD_SIZE"])
    config = {"train_micro_batch_size_per_gpu": micro_batch, "train_batch_size": micro_batch * world,
              "gradient_accumulation_steps": 1, "zero_optimization": {"stage": zero_stage},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "gradient_clipping": 0.0}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                                      config=config, dist_init_required=False)
    return engine


def parameters(engine) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in engine.module.named_parameters()}


def _spawned(rank: int, world: int, port: int, out: str, step, stages) -> None:
    from trd.engine.distributed import (
        detect_env,
        init_distributed,
        shutdown_distributed,
    )

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed(detect_env())
    results = {stage: step(stage) for stage in stages}
    if rank == 0:
        torch.save(results, out)
    shutdown_distributed()


def main(step: Callable[[int], dict[str, torch.Tensor]], stages: Iterable[int]) -> None:
    from trd.engine.distributed import free_port

    world, out = int(sys.argv[1]), sys.argv[2]
    torch.multiprocessing.spawn(_spawned, args=(world, free_port(), out, step, tuple(stages)), nprocs=world,
                                join=True)


def check_ranks_equal_one_process(script, stages: Iterable[int], expected: dict[str, torch.Tensor],
                                  start: dict[str, torch.Tensor], out) -> None:
    """Runs `python <script> 2 <out>` and checks that under each ZeRO stage the 2-rank step moved the parameters
    from `start` to `expected` (the one-process step, which must itself move them) to float32 round-off."""
    import subprocess

    proc = subprocess.run([sys.executable, str(script), "2", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(out, weights_only=True)
    assert any(not torch.equal(expected[n], start[n]) for n in expected)  # the step moved the weights
    assert set(results) == set(stages)
    for stage, params in results.items():
        assert params.keys() == expected.keys()
        for name, value in params.items():
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=f"ZeRO-{stage}: {name}")
