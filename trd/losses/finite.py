"""Stop the disposal stage the moment it diverges instead of training on NaNs."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NonFiniteError(FloatingPointError):
    """The loss or a gradient holds a NaN or an infinity."""


def check_finite(loss: Tensor, model: nn.Module, step: int | None = None) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite quantity (loss or which parameter's grad).

    Costs one device synchronisation for the loss and one for all gradients together.
    """
    where = f" at step {step}" if step is not None else ""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteError(f"non-finite loss{where}: {loss.detach().flatten()[:4].tolist()}")
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return
    finite = torch.stack([torch.isfinite(g).all() for _, g in named])
    if bool(finite.all()):
        return
    name = named[int((~finite).nonzero()[0])][0]
    raise NonFiniteError(f"non-finite gradient of parameter '{name}'{where}")
