"""Train-mode BatchNorm without touching running statistics, for second-order computations.

In train mode BatchNorm normalises with batch statistics and also updates its running
buffers in place. Under torch.func transforms (grad, jvp, vmap) that in-place update of a
captured buffer is an error ("attempted to call in-place operation ... that would mutate
a captured Tensor"), and with plain autograd an HVP that re-runs forward would update
the statistics more than once per step. Inside untracked_batchnorm(model) the modules
still use batch statistics (the same function of the input as in train mode) but leave
running_mean / running_var / num_batches_tracked alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def untracked_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    previous = [m.track_running_stats for m in norms]
    try:
        for m in norms:
            # BatchNorm only passes running buffers to F.batch_norm in train mode when
            # track_running_stats is set, so clearing it skips the update but keeps batch stats.
            m.track_running_stats = False
        yield model
    finally:
        for m, flag in zip(norms, previous):
            m.track_running_stats = flag
