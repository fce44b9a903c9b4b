"""A tiny features()/forward() model and synthetic data for the membership-inference tests.

A uniquely named module rather than conftest.py, which other test folders also have: `from conftest import`
would resolve to whichever of them was imported first.
"""

import torch
from torch import nn

INPUT_DIM = 16
NUM_CLASSES = 4


class TinyNet(nn.Module):
    """MLP with the features()/forward() interface of trd models; BatchNorm exercises eval-mode handling."""

    def __init__(self, input_dim: int = INPUT_DIM, hidden: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def gaussian_classes(n: int, seed: int, *, task_seed: int = 1234, spread: float = 5.0):
    """n labelled samples; the class means depend only on task_seed, so any two seeds are i.i.d. draws of one task.

    The default spread makes the classes overlap heavily: a memorising model then gets many test samples wrong.
    """
    means = torch.randn(NUM_CLASSES, INPUT_DIM, generator=torch.Generator().manual_seed(task_seed))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    images = means[labels] + spread * torch.randn(n, INPUT_DIM, generator=gen)
    return images, labels


def batches_of(images: torch.Tensor, labels: torch.Tensor, size: int = 64):
    return [(images[i:i + size], labels[i:i + size]) for i in range(0, len(images), size)]


def memorise(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, max_steps: int = 2000) -> nn.Module:
    """Full-batch Adam until every training sample is classified correctly (and a little beyond)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(max_steps):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimiser.step()
        if step % 50 == 49:
            model.eval()
            with torch.no_grad():
                done = bool((model(images).argmax(1) == labels).all())
            model.train()
            if done:
                break
    model.eval()
    with torch.no_grad():
        assert bool((model(images).argmax(1) == labels).all()), "the overfit model did not memorise its training set"
    return model
