"""The collectives of the gradient-collision losses, each issued as ONE call on a flat buffer.

Per-parameter calls would cost one collective per tensor; packing everything (including a few
scalars that ride along) into one contiguous buffer keeps GC at exactly one all-reduce in the
forward and one in the backward.  Callers reach torch.distributed through the module attribute
(``dist.all_reduce``) so that tests can count the calls.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def all_reduce_sum(
    tensors: Sequence[Tensor], scalars: Tensor | None, group: dist.ProcessGroup | None
) -> tuple[list[Tensor], Tensor | None]:
    """Sum ``tensors`` (and the 1-D ``scalars``) over ranks with a single all-reduce.

    Returns views of the reduced flat buffer shaped like ``tensors``, and the reduced scalars.
    """
    pieces = [t.reshape(-1) for t in tensors]
    if scalars is not None:
        pieces.append(scalars.to(pieces[0].dtype))
    flat = torch.cat(pieces)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    sizes = [t.numel() for t in tensors]
    if scalars is not None:
        sizes.append(scalars.numel())
    parts = flat.split(sizes)
    views = [part.view(t.shape) for part, t in zip(parts, tensors)]
    return views, (parts[-1] if scalars is not None else None)


def all_gather_rows(local: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """Stack the ``[rows, n]`` tensors of all ranks in rank order (one all-gather)."""
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local.contiguous(), group=group)
    return torch.cat(gathered)
