"""Test accuracy over a role's split, clean or under PGD, summed over ranks."""
from __future__ import annotations

from collections.abc import Callable

import torch

from trd.engine.distributed import all_reduce_sum


def _accuracy(model: torch.nn.Module, loader, device: torch.device,
              logits_of: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """The share of samples whose logits_of(batch index, images, labels) argmax is the label; model in eval mode
    meanwhile."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for b, (images, labels) in enumerate(loader):
        images, labels = images.to(device), labels.to(device)
        correct += int((logits_of(b, images, labels).argmax(1) == labels).sum())
        total += int(labels.numel())
    model.train(was_training)
    correct, total = all_reduce_sum([correct, total], device)
    if total == 0:
        raise ValueError("evaluation saw no samples: the test split is empty")
    return correct / total


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader, device: torch.device, forward=None) -> float:
    """forward(model, images) -> logits; defaults to model(images). Model is put in eval mode and restored."""
    return _accuracy(model, loader, device, lambda b, images, labels: forward(model, images) if forward
                     else model(images))


def robust_accuracy(model: torch.nn.Module, loader, device: torch.device, space, pgd, seed: int,
                    rank: int = 0) -> float:
    """Accuracy on PGD examples (trd.losses.adversarial.PgdSettings) of every test sample, model in eval mode,
    summed over ranks; batch b's random start is seeded from (seed, rank, b)."""
    from trd.attacks.pgd import cross_entropy_objective, pgd_linf
    from trd.engine.loop import step_seed

    def logits_of(b, images, labels):
        generator = torch.Generator().manual_seed(step_seed(seed, rank, b))
        adversarial = pgd_linf(cross_entropy_objective(model, labels), images, space, eps=pgd.eps, step=pgd.step,
                               steps=pgd.steps, random_start=pgd.random_start, generator=generator)
        with torch.no_grad():
            return model(adversarial)

    return _accuracy(model, loader, device, logits_of)
