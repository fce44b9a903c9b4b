"""A second data stream that runs alongside the main loop's, resumable from the global step."""
from __future__ import annotations

from typing import Iterator

import torch


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


class SideStream:
    """A second loader's batches for a training step: the first call starts them where `global_step` steps
    would have left off (cycle_from), so a resumed job draws the same side batches. With per_step > 1 every step
    owns that many consecutive batches (draw), whether or not it uses them all."""

    def __init__(self, loader, per_step: int = 1):
        self.loader, self.per_step = loader, per_step
        self._batches: Iterator | None = None

    def next(self, global_step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batches is None:
            self._batches = cycle_from(self.loader, global_step * self.per_step)
        images, labels = next(self._batches)
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def draw(self, global_step: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The per_step batches of one step."""
        return [self.next(global_step, device) for _ in range(self.per_step)]
