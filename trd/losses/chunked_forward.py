"""One forward of all c chunks of a batch, with chunk views of the parameters for per-chunk gradients.

Gradient collision needs, for each chunk m, the gradient g_m of chunk m's loss as if the chunk
had been forwarded alone.  Forwarding the chunks one by one (the per-chunk execution of
:mod:`trd.losses.gradient_collision`) runs every kernel c times on 1/c of the batch, which is slow
for small chunks (small-batch convolutions, c times the kernel launches and Python work).
Inside :class:`ChunkedForward` the model runs once on the whole batch and

* convolutions, linear layers and batch norms take each parameter ``p`` together with c chunk
  views of it (aliases ``p_1 .. p_c``); the gradient w.r.t. ``p_m`` is chunk m's gradient
  (:mod:`trd.losses.chunked_convolution`, :mod:`trd.losses.chunked_batch_norm`, and a batched
  matrix product over the stacked views for linear layers);
* train-mode batch norm normalises each chunk with its own statistics, and its running
  statistics and ``num_batches_tracked`` advance as after c chunk forwards.

This is exact for models whose samples interact only through batch norm and whose parameters
all belong to ``nn.Linear``, ``nn.Conv1d/2d/3d`` (zero padding) and ``nn.BatchNorm1d/2d/3d``
(with a numeric momentum) modules, which :func:`supports_chunked_forward` checks (ResNet and
WRN are such models; a ViT is not and runs chunk by chunk).  A parameter reaching any other
torch function inside the forward is an error, not a silent wrong gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from trd.losses.chunked_batch_norm import (
    chunked_batch_norm_eval,
    chunked_batch_norm_train,
)
from trd.losses.chunked_convolution import chunked_convolution

_CONVOLUTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# Half-precision models run chunk by chunk: the chunked batch norm's statistics buffers follow the
# input's dtype, which native kernels of other backends may not accept for bf16/fp16 (untested: no GPU).
_DTYPES = (torch.float32, torch.float64)


def supports_chunked_forward(model: nn.Module, inputs: Tensor) -> bool:
    """Whether every trainable parameter of ``model`` lives in a layer that :class:`ChunkedForward` handles."""
    if torch.is_autocast_enabled(inputs.device.type) or inputs.dtype not in _DTYPES:
        return False
    for module in model.modules():
        if isinstance(module, nn.SyncBatchNorm):
            return False  # its cross-process kernel is not F.batch_norm, so it could not be split by chunk
        params = list(module.parameters(recurse=False))
        if any(p.dtype not in _DTYPES for p in params):
            return False
        if not any(p.requires_grad for p in params):
            continue
        if type(module) is nn.Linear:
            continue
        if type(module) in _CONV_MODULES and module.padding_mode == "zeros" and not isinstance(module.padding, str):
            continue
        if type(module) in _NORM_MODULES and module.momentum is not None:
            continue
        return False
    return True


class ChunkedForward(TorchFunctionMode):
    """Routes the layers of a supported model to their chunked versions.

    ``views`` maps ``id(parameter)`` to its c chunk views (aliases of the parameter, one per chunk),
    made when a layer first uses the parameter; the gradient of chunk m's loss w.r.t. the parameter
    is the gradient w.r.t. its m-th view.
    """

    def __init__(self, model: nn.Module, params: list[Tensor], chunks: int):
        super().__init__()
        self.chunks = chunks
        self.trainable = {id(p): p for p in params}
        self.views: dict[int, list[Tensor]] = {}
        self.norms = {
            id(m.running_mean): m for m in model.modules() if isinstance(m, _NORM_MODULES) and m.running_mean is not None
        }

    def chunk_views(self, p: Tensor | None) -> list[Tensor]:
        """The chunk views of a trainable parameter; empty for None and for frozen tensors."""
        if p is None or id(p) not in self.trainable:
            return []
        if id(p) not in self.views:
            self.views[id(p)] = [p.view_as(p) for _ in range(self.chunks)]
        return self.views[id(p)]

    def stacked(self, p: Tensor | None) -> Tensor | None:
        """(c, *shape): the chunk views stacked (a trainable parameter) or ``p`` broadcast (a frozen one)."""
        if p is None:
            return None
        views = self.chunk_views(p)
        return torch.stack(views) if views else p.expand(self.chunks, *p.shape)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVOLUTIONS:
            return self._convolution(*args, **kwargs)
        if func is F.batch_norm:
            return self._batch_norm(*args, **kwargs)
        if func is F.linear:
            return self._linear(*args, **kwargs)
        result = func(*args, **kwargs)
        # Metadata reads of a parameter (shape, requires_grad) are fine; computing with it is not.
        if any(isinstance(t, Tensor) and t.requires_grad for t in tree_leaves(result)) and any(
            isinstance(t, Tensor) and id(t) in self.trainable for t in tree_leaves((args, kwargs))
        ):
            raise RuntimeError(
                f"gradient collision: {getattr(func, '__name__', func)} computes with a trainable parameter, "
                "which the chunked forward cannot split by chunk; pass execution='per_chunk'"
            )
        return result

    def _convolution(self, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if isinstance(padding, str) or input.dim() != weight.dim():
            raise RuntimeError("gradient collision: the chunked forward needs numeric padding and batched "
                               "convolution inputs; pass execution='per_chunk'")
        weight_views, bias_views = self.chunk_views(weight), self.chunk_views(bias)
        if not weight_views and not bias_views:  # a frozen convolution needs no chunk gradients
            return _plain_conv(input, weight, bias, stride, padding, dilation, groups)
        return chunked_convolution(
            input, weight, bias, weight_views, bias_views, stride, padding, dilation, groups, self.chunks
        )

    def _batch_norm(self, input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5):
        if not training:
            return chunked_batch_norm_eval(input, self.stacked(weight), self.stacked(bias), running_mean, running_var,
                                           eps, self.chunks)
        F._verify_batch_size([input.shape[0] // self.chunks, *input.shape[1:]])
        output = chunked_batch_norm_train(input, weight, bias, self.chunk_views(weight), self.chunk_views(bias),
                                          running_mean, running_var, momentum, eps, self.chunks)
        module = self.norms.get(id(running_mean))
        if module is not None and module.num_batches_tracked is not None:
            # The module counted one forward; c chunk forwards would have counted c.
            module.num_batches_tracked.add_(self.chunks - 1)
        return output

    def _linear(self, input, weight, bias=None):
        rows = input.reshape(self.chunks, -1, input.shape[-1])
        weights = self.stacked(weight).transpose(1, 2)
        if bias is None:
            output = torch.bmm(rows, weights)
        else:
            output = torch.baddbmm(self.stacked(bias).unsqueeze(1), rows, weights)
        return output.reshape(*input.shape[:-1], weight.shape[0])


def _plain_conv(input, weight, bias, stride, padding, dilation, groups):
    return {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[weight.dim()](input, weight, bias, stride, padding, dilation, groups)
