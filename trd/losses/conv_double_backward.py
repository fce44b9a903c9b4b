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
"""

from __future__ import annotations

from typing import Sequence

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
            grad_weight = geometry.backward(dy, u_x, weight, (False, True, False))[1]
        if need_x and u_weight is not None:
            grad_x = geometry.backward(dy, x, u_weight, (True, False, False))[0]
        return grad_dy, grad_x, grad_weight, None, None


def convolution(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation, groups: int) -> Tensor:
    """``F.conv{1,2,3}d`` with numeric padding, through the cheap double backward."""
    return _Convolution.apply(x, weight, bias, ConvGeometry(weight.dim() - 2, stride, padding, dilation, groups))
