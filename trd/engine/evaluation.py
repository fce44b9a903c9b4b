"""Test accuracy over a role's split, summed over ranks."""
from __future__ import annotations

from collections.abc import Callable

import torch

from trd.engine.distributed import all_reduce_sum


def accuracy_of(model: torch.nn.Module, loader, device: torch.device,
                logits_of: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """The share of samples whose logits_of(batch index, images, labels) argmax is the label, model in eval mode
    meanwhile: the one loop of clean and adversarial test accuracy."""
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
    return accuracy_of(model, loader, device, lambda b, images, labels: forward(model, images) if forward
                       else model(images))
