"""The PGD adversarial training loss (Madry et al.) with CARTL's Feature Distance Minimisation (Chen et al., ICML
2021): L = CE(model(x'), y) + lam * feature_distance(f_b(x), f_b(x')), with x' the PGD example of x and f_b the
output of the last block that transfer freezes. lam = 0 is plain PGD-AT and skips the clean forward.

The attack runs on the model in train mode with untracked BatchNorm: it sees the batch statistics the training
forward will use, and only the training forward moves the running statistics (the clean forward of the FDM
term is untracked too, so they follow the adversarial batches, as in PGD-AT). robust_accuracy is what such a
model is judged by during training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trd.attacks.pgd import PixelSpace, cross_entropy_objective, pgd_linf
from trd.engine.evaluation import accuracy_of
from trd.engine.loop import step_seed
from trd.losses.feature_distance import feature_distance
from trd.models.batchnorm import untracked_batchnorm


@dataclass(frozen=True)
class PgdSettings:
    eps: float
    step: float
    steps: int
    random_start: bool = True


def adversarial_examples(model, images: torch.Tensor, labels: torch.Tensor, space: PixelSpace, pgd: PgdSettings,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    with untracked_batchnorm(model):
        return pgd_linf(cross_entropy_objective(model, labels), images, space, eps=pgd.eps, step=pgd.step,
                        steps=pgd.steps, random_start=pgd.random_start, generator=generator)


def adversarial_training_loss(model, images: torch.Tensor, labels: torch.Tensor, space: PixelSpace,
                              pgd: PgdSettings, *, lam: float = 0.0, boundary: str | None = None,
                              generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """(loss, scalars to log) for one batch; boundary names the block whose output FDM compares (lam > 0)."""
    adversarial = adversarial_examples(model, images, labels, space, pgd, generator)
    if not lam:
        logits = model(adversarial)
        return F.cross_entropy(logits, labels), {"adv_acc": _acc(logits, labels)}
    if boundary is None:
        raise ValueError("adversarial_training_loss: lam > 0 needs the boundary block of the feature distance")
    logits, taps = model.forward_with_taps(adversarial, [boundary])
    with untracked_batchnorm(model):
        clean = model.forward_to(images, boundary)
    ce, distance = F.cross_entropy(logits, labels), feature_distance(clean, taps[boundary])
    return ce + lam * distance, {"adv_acc": _acc(logits, labels), "ce": float(ce.detach()),
                                 "feature_distance": float(distance.detach())}


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.detach().argmax(1) == labels).float().mean())


def robust_accuracy(model: torch.nn.Module, loader, device: torch.device, space: PixelSpace, pgd: PgdSettings,
                    seed: int, rank: int = 0) -> float:
    """Accuracy on PGD examples of every test sample, model in eval mode, summed over ranks; batch b's random start
    is seeded from (seed, rank, b)."""

    def logits_of(b, images, labels):
        generator = torch.Generator().manual_seed(step_seed(seed, rank, b))
        adversarial = adversarial_examples(model, images, labels, space, pgd, generator)  # eval mode: running stats
        with torch.no_grad():
            return model(adversarial)

    return accuracy_of(model, loader, device, logits_of)
