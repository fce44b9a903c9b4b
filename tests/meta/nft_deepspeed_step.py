"""One nft disposal step (retain CE + a simulated attacker's resistance loss) through a DeepSpeed engine, one
attacker per rank, and through plain PyTorch (both attackers in one process), per ZeRO stage.

Run as `python nft_deepspeed_step.py <world> <out.pt>`. The two attackers differ in everything the distribution
samples (optimiser, steps, full or linear, second- or first-order), so the ranks' graphs differ too.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.deepspeed_ranks
from tests.deepspeed_ranks import main, parameters, sgd_engine  # noqa: E402
from trd.losses.double_backward_mode import fast_double_backward
from trd.losses.resistance import inverse_cross_entropy
from trd.meta.inner import InnerOptimizer
from trd.meta.simulated_attack import SimulatedAttacker, attacked_loss
from trd.models import build_model

LR = 0.1
ATTACKERS = [SimulatedAttacker(InnerOptimizer("adam", lr=0.01), 2, "full", second_order=True),
             SimulatedAttacker(InnerOptimizer("momentum", lr=0.05), 3, "linear", second_order=False)]


def _model():
    torch.manual_seed(0)
    return build_model("cnn", num_classes=3, image_size=8, width=4)


def _batches(rank: int):
    g = torch.Generator().manual_seed(10 + rank)
    return [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(4)]


def _loss(model, rank: int, params=None):
    inner, query = _batches(rank)[:3], _batches(rank)[3]
    resist, _ = attacked_loss(model, ATTACKERS[rank], lambda t: inner[t], query, 5, inverse_cross_entropy,
                              torch.Generator().manual_seed(rank), params=params, double_backward=fast_double_backward)
    retain = F.cross_entropy(model(query[0]), query[1] % 3)
    return 0.5 * retain + 0.5 * resist


def plain_step() -> dict[str, torch.Tensor]:
    model = _model()
    params = dict(model.named_parameters())
    body = {n: p for n, p in params.items() if not n.startswith("head.")}
    total = sum(_loss(model, rank, body) for rank in range(2)) / 2
    grads = torch.autograd.grad(total, list(params.values()))
    with torch.no_grad():
        return {n: p - LR * g for (n, p), g in zip(params.items(), grads)}


def deepspeed_step(zero_stage: int) -> dict[str, torch.Tensor]:
    rank = int(os.environ["RANK"])
    engine = sgd_engine(_model(), LR, micro_batch=4, zero_stage=zero_stage)
    engine.backward(_loss(engine.module, rank))
    engine.step()
    return parameters(engine)


if __name__ == "__main__":
    main(deepspeed_step, stages=(0, 1, 2))
