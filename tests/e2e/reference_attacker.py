"""A free-rider's fine-tuning loop written the plain way, independent of trd's stage code: new head, linear
probe or full fine-tuning, SGD with momentum or Adam over five learning rates each, batch 32, no augmentation,
the best test accuracy over every run and epoch (what trd's oracle selection also takes)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

GRID = {"sgd": [0.003, 0.01, 0.03, 0.1, 0.3], "adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]}


def tensors(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def test_accuracy(model, x, y) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def best_accuracy(model: torch.nn.Module, num_classes: int, train, test, epochs: int = 30, seed: int = 0,
                  modes: tuple[str, ...] = ("linear", "full")) -> float:
    """model: a trd model (features + head); train, test: (images, labels) tensors."""
    best = 0.0
    for mode in modes:
        for optimizer_name, lrs in GRID.items():
            for lr in lrs:
                torch.manual_seed(seed)
                attacked = copy.deepcopy(model)
                attacked.head = torch.nn.Linear(attacked.feature_dim, num_classes)
                params = attacked.head.parameters() if mode == "linear" else attacked.parameters()
                optimizer = (torch.optim.SGD(params, lr=lr, momentum=0.9) if optimizer_name == "sgd"
                             else torch.optim.Adam(params, lr=lr))
                for _ in range(epochs):
                    attacked.train()
                    if mode == "linear":  # a frozen body keeps its BatchNorm statistics
                        attacked.eval()
                    order = torch.randperm(len(train[1]))
                    for i in range(0, len(order), 32):
                        batch = order[i:i + 32]
                        loss = F.cross_entropy(attacked(train[0][batch]), train[1][batch])
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    accuracy = test_accuracy(attacked, *test)
                    if accuracy == accuracy:  # a diverged run (NaN logits) scores nothing
                        best = max(best, accuracy)
    return best
