"""CARTL's Non-Expansive Fine-Tuning: every convolution and linear layer that transfer trains (the last k blocks,
the neck and the head) is reparametrised as beta * W / sigma(W), with torch's spectral_norm parametrization
(power iteration on W reshaped to out x rest, one step per training forward) and a scale after it. The released
model is a plain model again: remove_neft bakes the normalised weights in."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


class Scaled(nn.Module):
    """A parametrization that multiplies the weight by a constant."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.factor


def neft_layers(model, k: int) -> list[tuple[str, nn.Module]]:
    """(name, module) of the convolutions and linear layers of the last k blocks, the neck and the head."""
    prefixes = tuple(name + "." for name in model.last_k_block_names(k)) + ("neck.", "head.")
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and (name + ".").startswith(prefixes)]


def apply_neft(model, k: int, beta: float, power_iterations: int = 1) -> list[str]:
    """Spectrally normalise, then scale by beta, the layers transfer trains; returns their names."""
    if beta <= 0:
        raise ValueError(f"neft: beta must be > 0, got {beta}")
    layers = neft_layers(model, k)
    for _, module in layers:
        spectral_norm(module, n_power_iterations=power_iterations)
        parametrize.register_parametrization(module, "weight", Scaled(beta))
    return [name for name, _ in layers]


def remove_neft(model) -> None:
    """Each normalised layer's weight as it is now (eval: no further power iteration), as a plain parameter."""
    was_training = model.training
    model.eval()
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    model.train(was_training)


def matrix_spectral_norm(weight: torch.Tensor) -> float:
    """The largest singular value of the weight reshaped as spectral_norm sees it (out x rest)."""
    return float(torch.linalg.matrix_norm(weight.detach().flatten(1).double(), ord=2))
