"""Route the layers whose native double backward is slow through hand-written ones.

Inside :func:`fast_double_backward`, a ``TorchFunctionMode`` sends

* train-mode ``F.batch_norm`` to :func:`trd.losses.chunked_batch_norm.chunked_batch_norm_train` (one chunk),
* batched ``F.conv1d/2d/3d`` with numeric padding to
  :func:`trd.losses.conv_double_backward.convolution`,

and lets every other call through untouched.  Forward values, running-statistics updates and
first-order gradients are those of the native kernels; only the graph that a
``create_graph=True`` backward records differs, and with it the cost of differentiating it.
The mode intercepts only the ``torch.nn.functional`` entry points that ``nn.Conv*d`` and
``nn.BatchNorm*d`` call, so models built from those modules are covered without changes.
Under autocast nothing is intercepted: the hand-written functions call aten kernels directly,
which autocast's casting rules (written for the functional entry points) would not cover.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from trd.losses.chunked_batch_norm import chunked_batch_norm_train
from trd.losses.conv_double_backward import convolution

_CONVOLUTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _batch_norm_arguments(
    input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    return input, running_mean, running_var, weight, bias, training, momentum, eps


def _conv_arguments(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, bias, stride, padding, dilation, groups


def _autocast_enabled(input) -> bool:
    return torch.is_autocast_enabled(input.device.type)


class _FastDoubleBackwardMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is F.batch_norm or func in _CONVOLUTIONS) and _autocast_enabled(args[0] if args else kwargs["input"]):
            return func(*args, **kwargs)
        if func is F.batch_norm:
            input, running_mean, running_var, weight, bias, training, momentum, eps = _batch_norm_arguments(
                *args, **kwargs
            )
            if training:
                F._verify_batch_size(input.size())
                return chunked_batch_norm_train(input, weight, bias, [], [], running_mean, running_var, momentum, eps, 1)
        elif func in _CONVOLUTIONS:
            input, weight, bias, stride, padding, dilation, groups = _conv_arguments(*args, **kwargs)
            # String padding ("same") and unbatched inputs keep the native path.
            if not isinstance(padding, str) and input.dim() == _CONVOLUTIONS[func] + 2:
                return convolution(input, weight, bias, stride, padding, dilation, groups)
        return func(*args, **kwargs)


@contextlib.contextmanager
def fast_double_backward() -> Iterator[None]:
    """Record convolutions and train-mode batch norms inside the block with cheap double backwards."""
    with _FastDoubleBackwardMode():
        yield
