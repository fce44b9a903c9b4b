"""Stochastic weight averaging (Izmailov et al., 2018) as Renofeation runs it, on torch.optim.swa_utils: from
start_step on, a constant learning rate and the weights averaged every `every` optimiser steps; at the end the
averaged model's BatchNorm statistics are recomputed on the training data (update_bn).

The average lives in a module beside the trained one so that the engine's checkpoints carry it and a resumed job
continues the same average."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn


class WithAverage(nn.Module):
    """The trained model and its running average, one module for the engine (which trains `model` only)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.average = AveragedModel(model)
        self.average.requires_grad_(False)

    def forward(self, x):
        return self.model(x)


class SwaSchedule:
    def __init__(self, start_step: int, every: int, lr: float):
        if start_step < 0 or every < 1 or lr <= 0:
            raise ValueError(f"swa: start_step >= 0, every >= 1 and lr > 0 needed, got {start_step}, {every}, {lr}")
        self.start_step, self.every, self.lr = start_step, every, lr

    def due(self, global_step: int) -> bool:
        """Whether the weights after global_step optimiser steps join the average."""
        return global_step >= self.start_step and (global_step - self.start_step) % self.every == 0

    def before_step(self, wrapped: WithAverage, optimizer: torch.optim.Optimizer, global_step: int) -> None:
        """Called before optimiser step global_step + 1: averages the current weights when due, and holds the
        learning rate at lr from start_step on (the engine's schedule sets it again after every step)."""
        if self.due(global_step):
            wrapped.average.update_parameters(wrapped.model)
        if global_step >= self.start_step:
            for group in optimizer.param_groups:
                group["lr"] = self.lr

    def finish(self, wrapped: WithAverage, total_steps: int, loader, device) -> nn.Module:
        """The averaged model, with the final weights averaged in when due and BatchNorm recomputed."""
        if self.due(total_steps):
            wrapped.average.update_parameters(wrapped.model)
        if int(wrapped.average.n_averaged) == 0:
            raise ValueError(f"swa averaged nothing: start_step {self.start_step} is past the run's {total_steps} "
                             f"steps; start it earlier")
        update_bn(((images.to(device), labels) for images, labels in loader), wrapped.average, device=device)
        return wrapped.average.module
