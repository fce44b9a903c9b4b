"""One CARTL adversarial training step (PGD + Feature Distance Minimisation) through a DeepSpeed engine, each rank
on its half of the batch, and in one plain PyTorch process over both halves (the mean of their losses, each half
with the random start its rank draws).

Run as `python adversarial_deepspeed_step.py <world> <out.pt>`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.deepspeed_ranks
from tests.deepspeed_ranks import main, parameters, sgd_engine  # noqa: E402
from trd.attacks.adversarial_training import PgdSettings, adversarial_training_loss
from trd.attacks.pgd import PixelSpace
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
    engine = sgd_engine(_model(), LR, micro_batch=HALF, zero_stage=zero_stage)
    engine.train()
    engine.backward(_loss(engine.module, int(os.environ["RANK"])))
    engine.step()
    return parameters(engine)


if __name__ == "__main__":
    main(deepspeed_step, stages=(0, 2))
