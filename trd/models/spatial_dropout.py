"""A forward with spatial dropout (whole channels, as nn.Dropout2d) after chosen blocks, which also returns those
blocks' outputs before the dropout (what feature distillation compares). The dropout lives in this forward,
not in the model, so the released model is the plain architecture."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def forward_with_dropout(model, x: torch.Tensor, blocks: list[str], p: float
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits, {block: output}) with F.dropout2d(p) applied after each of blocks in train mode."""
    if not 0 <= p < 1:
        raise ValueError(f"spatial dropout: p must be in [0, 1), got {p}")
    unknown = sorted(set(blocks) - set(model.block_names))
    if unknown:
        raise ValueError(f"{model.name}: unknown block(s) {unknown}; its blocks are {model.block_names}")
    taps = {}
    for name in model.block_names:
        x = model.get_submodule(name)(x)
        if name in blocks:
            taps[name] = x
            if p:
                x = F.dropout2d(x, p, training=model.training)
    return model.head(model.neck(x)), taps
