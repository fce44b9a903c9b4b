"""L2-SP (Li et al., ICML 2018): fine-tuning regularised toward the starting point rather than toward zero,
alpha / 2 * ||w - w0||^2 over the pretrained body plus beta / 2 * ||w||^2 over the new head."""
from __future__ import annotations

import torch


def starting_point(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the body's parameters (everything but the head) to be pulled toward."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("head.")}


def l2sp_penalty(model: torch.nn.Module, start: dict[str, torch.Tensor], alpha: float, beta: float) -> torch.Tensor:
    body = sum((p - start[n]).pow(2).sum() for n, p in model.named_parameters() if n in start)
    head = sum(p.pow(2).sum() for n, p in model.named_parameters() if n.startswith("head."))
    return alpha / 2 * body + beta / 2 * head
