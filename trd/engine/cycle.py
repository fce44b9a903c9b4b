"""A second data stream that runs alongside the main loop's, resumable from the global step."""
from __future__ import annotations

from typing import Iterator


def cycle_from(loader, global_step: int) -> Iterator:
    """Batches of a train loader repeated over its epochs, starting where global_step of them would have
    left off, so a resumed job draws the same side batches as an uninterrupted one."""
    steps = loader.steps_per_epoch
    if steps == 0:
        raise ValueError("the side loader has no full batch: lower its batch size")
    epoch, step = divmod(global_step, steps)
    while True:
        loader.set_epoch(epoch)
        yield from (loader.iter_from(step) if step else iter(loader))
        epoch, step = epoch + 1, 0
