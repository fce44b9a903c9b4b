"""Marks the backward pass that computes the per-chunk gradients of a chunked forward.

The chunked layers (:mod:`trd.losses.chunked_convolution`, :mod:`trd.losses.chunked_batch_norm`)
can send a parameter's gradient out per chunk (through its chunk view) or summed (to the
parameter).  Only the pass that computes GC's chunk gradients needs the former, whether or not
it records a graph (a loss value computed under ``torch.no_grad`` needs them too); every other
backward through the same graph, the Hessian-vector product above all, needs only the sums.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# Not thread-local: on CUDA the autograd engine runs backward functions on its device threads.
_active = False


def wants_chunk_gradients() -> bool:
    return _active


@contextlib.contextmanager
def chunk_gradient_pass() -> Iterator[None]:
    global _active
    previous, _active = _active, True
    try:
        yield
    finally:
        _active = previous
