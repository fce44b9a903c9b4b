"""Convolution whose double backward is four plain convolution calls.

PyTorch's ``_convolution_double_backward`` forms the weight term of the second-order pass as a
convolution over batch-transposed copies of the activations; on CPU (oneDNN) that path cost
about 2.5x a weight-gradient call, making the conv double backward ~2x slower than it needs to
be.  :class:`_Convolution` keeps the native forward and first backward; its backward is
:class:`_ConvolutionBackward`, whose own backward uses the derivation below and only the
forward-convolution and ``convolution_backward`` kernels.

First backward of y = conv(x, W) + b, with the output gradient dy:

    dx = conv_T(dy, W),   dW = weight_grad(x, dy),   db = sum(dy).

Given cotangents (u_x, u_W, u_b) of (dx, dW, db), S = <u_x, dx> + <u_W, dW> + <u_b, db>:

    dS/d dy = conv(u_x, W) + conv(x, u_W) + u_b    (adjoints of conv_T and of weight_grad)
    dS/dW   = weight_grad(u_x, dy)                 (<u_x, conv_T(dy, W)> = <conv(u_x, W), dy>)
    dS/dx   = conv_T(dy, u_W)                      (<u_W, weight_grad(x, dy)> = <conv(x, u_W), dy>)

Deferred weight gradients
-------------------------
A gradient-collision backward runs one Hessian-vector product per chunk and sums them.  Each
product gives every conv weight two terms, weight_grad(u_x, dy) above and weight_grad(x, dy')
from the forward convolution's backward, and weight_grad is linear in its batch, so the sum
over chunks of all these terms is ONE weight_grad call on the concatenated batch.  For layers
whose weight is larger than a chunk's input (deep ResNet stages: 512x512x3x3 weights on 4x4
maps), 2c small-batch weight_grad calls that each write a full weight are far slower than one
call, while keeping the small activations costs little memory.  Inside
:func:`deferred_weight_gradients` such terms are collected instead of computed (the engine
gets ``None`` for the weight) and :meth:`DeferredWeightGradients.flush` returns the sums.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor

_aten = torch.ops.aten


class ConvGeometry:
    """Stride, padding, dilation and groups of one non-transposed convolution, as aten wants them."""

    def __init__(self, dims: int, stride, padding, dilation, groups: int):
        self.stride = _expand(stride, dims)
        self.padding = _expand(padding, dims)
        self.dilation = _expand(dilation, dims)
        self.groups = groups
        self.output_padding = [0] * dims

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return _aten.convolution(
            x, weight, bias, self.stride, self.padding, self.dilation, False, self.output_padding, self.groups
        )

    def backward(self, dy: Tensor, x: Tensor, weight: Tensor, mask: Sequence[bool], bias_size=None):
        return _aten.convolution_backward(
            dy, x, weight, bias_size, self.stride, self.padding, self.dilation, False, self.output_padding,
            self.groups, list(mask),
        )


def _expand(value, dims: int) -> list[int]:
    return [int(value)] * dims if isinstance(value, int) else [int(v) for v in value]


class DeferredWeightGradients:
    """Weight-gradient terms of large-weight convolutions, collected during Hessian-vector products."""

    def __init__(self, params: Sequence[Tensor]):
        self.index = {p.data_ptr(): i for i, p in enumerate(params)}
        self.terms: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self.owners: dict[int, tuple[Tensor, ConvGeometry]] = {}

    def wants(self, weight: Tensor, x: Tensor) -> bool:
        return weight.data_ptr() in self.index and weight.numel() >= x.numel()

    def add(self, weight: Tensor, x: Tensor, dy: Tensor, geometry: ConvGeometry) -> None:
        key = weight.data_ptr()
        self.terms.setdefault(key, []).append((x, dy))
        self.owners[key] = (weight, geometry)

    def flush(self) -> dict[int, Tensor]:
        """Parameter index -> summed weight gradient of every collected term."""
        sums = {}
        for key, terms in self.terms.items():
            weight, geometry = self.owners[key]
            x = torch.cat([t[0] for t in terms])
            dy = torch.cat([t[1] for t in terms])
            sums[self.index[key]] = geometry.backward(dy, x, weight, (False, True, False))[1]
        self.terms.clear()
        return sums


# Not thread-local: on CUDA the autograd engine runs backward functions on its device threads.
_deferral: DeferredWeightGradients | None = None


@contextlib.contextmanager
def deferred_weight_gradients(params: Sequence[Tensor]) -> Iterator[DeferredWeightGradients]:
    """Collect, rather than compute, the conv weight-gradient terms of ``params`` in backwards run inside."""
    global _deferral
    previous, _deferral = _deferral, DeferredWeightGradients(params)
    try:
        yield _deferral
    finally:
        _deferral = previous


class _Convolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geometry: ConvGeometry):
        ctx.save_for_backward(x, weight)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        return geometry.conv(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        mask = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        if mask[1] and _deferral is not None and not torch.is_grad_enabled() and _deferral.wants(weight, x):
            _deferral.add(weight, x, dy, ctx.geometry)
            bias_size = [weight.shape[0]] if mask[2] else None
            dx, _, d_bias = ctx.geometry.backward(dy, x, weight, (mask[0], False, mask[2]), bias_size)
            return dx, None, d_bias, None
        dx, d_weight, d_bias = _ConvolutionBackward.apply(dy, x, weight, ctx.geometry, mask)
        return dx, d_weight, d_bias, None


class _ConvolutionBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, weight, geometry: ConvGeometry, mask):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(dy, x, weight)
        ctx.geometry = geometry
        dx, d_weight, d_bias = geometry.backward(dy, x, weight, mask, [weight.shape[0]] if mask[2] else None)
        return dx, d_weight, d_bias

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, u_x, u_weight, u_bias):
        dy, x, weight = ctx.saved_tensors
        geometry: ConvGeometry = ctx.geometry
        need_dy, need_x, need_weight = ctx.needs_input_grad[:3]
        grad_dy = grad_x = grad_weight = None
        if need_dy:
            if u_weight is not None:
                grad_dy = geometry.conv(x, u_weight, u_bias)
            elif u_bias is not None:
                grad_dy = u_bias.view(1, -1, *([1] * (dy.dim() - 2))).expand_as(dy).clone()
            if u_x is not None:
                from_input = geometry.conv(u_x, weight)
                grad_dy = from_input if grad_dy is None else grad_dy.add_(from_input)
        if need_weight and u_x is not None:
            if _deferral is not None and _deferral.wants(weight, u_x):
                _deferral.add(weight, u_x, dy, geometry)
            else:
                grad_weight = geometry.backward(dy, u_x, weight, (False, True, False))[1]
        if need_x and u_weight is not None:
            grad_x = geometry.backward(dy, x, u_weight, (True, False, False))[0]
        return grad_dy, grad_x, grad_weight, None, None


def convolution(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation, groups: int) -> Tensor:
    """``F.conv{1,2,3}d`` with numeric padding, through the cheap double backward."""
    return _Convolution.apply(x, weight, bias, ConvGeometry(weight.dim() - 2, stride, padding, dilation, groups))
