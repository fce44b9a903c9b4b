"""Counts summed over a fixed-order evaluation loader, resumable: an attack on a test set is long (PGD-100 is a
hundred forward-backward passes per batch), so each rank keeps what it counted so far in its own file in the
stage dir, and a resumed job skips the batches already counted. A tally file is only valid for the config that
wrote it: the stage dir is the config's hash."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from trd.atomic import atomic_write_json, read_json
from trd.engine.distributed import all_reduce_sum


def tally(loader, count: Callable[[int, torch.Tensor, torch.Tensor], dict[str, int]], names: list[str], *,
          stage_dir: Path, rank: int, device: torch.device, save_every: int = 10) -> dict[str, int]:
    """Sums count(batch_index, images, labels) -> {name: count for name in names} over the loader and the ranks."""
    path = Path(stage_dir) / f"tally.rank{rank}.json"
    state = read_json(path) or {"batches": 0, "counts": {}}
    done = int(state["batches"])
    counts = {n: int(state["counts"].get(n, 0)) for n in names}
    for b, (images, labels) in enumerate(loader):
        if b < done:  # evaluation order is fixed, so these are the batches counted before
            continue
        for name, value in count(b, images.to(device), labels.to(device)).items():
            counts[name] += int(value)
        if (b + 1) % save_every == 0:
            atomic_write_json(path, {"batches": b + 1, "counts": counts})
    totals = all_reduce_sum([counts[n] for n in names], device)
    path.unlink(missing_ok=True)
    return {n: int(v) for n, v in zip(names, totals)}
