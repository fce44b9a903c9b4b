"""UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", 2023): error-maximising noise per forgotten
class, then impair (train on the noise, labelled with its class, and a sample of retained data) and repair
(train on retained data). Each forgotten class gets its own noise, learnt against its own label: one public
implementation learns every class's noise against a single shared label, which impairs one class only."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def error_maximising_noise(model: nn.Module, classes: Sequence[int], shape: Sequence[int], *, count: int,
                           steps: int, lr: float, reg: float, generator: torch.Generator | None = None,
                           device: torch.device | str = "cpu") -> dict[int, torch.Tensor]:
    """class -> `count` images of `shape`, each learnt to maximise the model's cross-entropy for that class,
    minus reg x the mean per-image RMS (which keeps the noise from growing without bound). The model is in
    eval mode and not updated."""
    was_training = model.training
    model.eval()
    noise = {}
    for c in classes:
        x = torch.randn(count, *shape, generator=generator).to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=lr)
        labels = torch.full((count,), int(c), device=device, dtype=torch.long)
        for _ in range(steps):
            objective = -F.cross_entropy(model(x), labels) + reg * x.pow(2).flatten(1).mean(1).sqrt().mean()
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
        noise[int(c)] = x.detach()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return noise


def noise_batch(noise: dict[int, torch.Tensor], size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` noise images drawn over every class's noise, with their class as label."""
    images = torch.cat(list(noise.values()))
    labels = torch.cat([torch.full((len(x),), c, dtype=torch.long) for c, x in noise.items()]).to(images.device)
    pick = torch.randint(0, len(images), (size,), generator=generator).to(images.device)
    return images[pick], labels[pick]
