"""A released model together with the private source head it was transferred from.

The released weights (`model`) carry the target head; the source head stays with the defender and is
what source accuracy, SRC-KD and the gradient-collision loss see through.
"""
from __future__ import annotations

import torch
from torch import nn

from trd.models.base import TrdModel


class SourceView(nn.Module):
    """model's features followed by the source head: a classifier of the source task."""

    def __init__(self, model: TrdModel, source_head: nn.Module):
        super().__init__()
        self.model = model
        self.source_head = source_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.source_head(self.model.features(x))

    def forward_both_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(source logits, target logits) from one forward of the features."""
        features = self.model.features(x)
        return self.source_head(features), self.model.head(features)


class WithSourceHead(nn.Module):
    """One module (for the engine and its optimiser) holding the released model and the source head:
    forward gives target logits, `source` is the source-task view of the same parameters."""

    def __init__(self, model: TrdModel, source_head: nn.Module):
        super().__init__()
        self.source = SourceView(model, source_head)

    @property
    def model(self) -> TrdModel:
        return self.source.model

    @property
    def source_head(self) -> nn.Module:
        return self.source.source_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.source.model(x)
