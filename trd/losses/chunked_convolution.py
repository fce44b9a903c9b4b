"""Convolution over a batch of c chunks whose weight gradient leaves chunk by chunk.

Gradient collision needs each chunk's own weight gradient, but every chunk uses the same weight
in the forward.  :func:`chunked_convolution` therefore takes the shared weight ``W`` (used by the
computation) and c chunk views ``W_m`` of it (aliases through which the per-chunk gradients
leave; the bias likewise):

* forward: ``y = conv(x, W) + b`` on the whole batch, one call;
* the backward that computes GC's chunk gradients (:mod:`trd.losses.chunk_gradient_pass`)
  returns ``dx = conv_T(dy, W)`` for the whole batch in one call and ``d W_m = weight_grad(x_m,
  dy_m)`` per chunk, each to its own view;
* any other backward returns ``dx`` and the summed weight gradient (one call) to ``W``.

Both routes give ``W`` the same total derivative (the views sum into it), so the second route is
only cheaper.  The backward of the chunk-gradient backward (the Hessian-vector product of GC),
with cotangents ``u_x`` of ``dx`` and ``U_m`` of ``d W_m``:

    d dy   = conv(u_x, W) + [conv(x_m, U_m) + u_b,m]_m   (adjoints of conv_T and weight_grad)
    d W    = weight_grad(u_x, dy)                         (whole batch, one call)
    d x_m  = conv_T(dy_m, U_m)

Only the terms with a chunk's own ``U_m`` run chunk by chunk (a third of the convolution work of
the whole GC step); everything with the shared weight sees the whole batch, which keeps those
kernels as efficient as a plain training step's however small the chunks are.  Per-chunk results
are written into slices of whole-batch tensors, and every per-chunk gradient is a tensor of its
own: no ``c x |W|`` stack is ever allocated (on CPU such large fresh buffers cost page faults on
every step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trd.losses.chunk_gradient_pass import wants_chunk_gradients
from trd.losses.conv_double_backward import ConvGeometry


class _ChunkedConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geometry: ConvGeometry, chunks: int, weight_views: int, *views):
        # ``views``: ``weight_views`` weight views (0 or c), then the bias views (0 or c).
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.chunks, ctx.has_bias = geometry, chunks, bias is not None
        ctx.weight_views, ctx.bias_views = weight_views, len(views) - weight_views
        return geometry.conv(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        geometry: ConvGeometry = ctx.geometry
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        if wants_chunk_gradients():
            dx, *per_chunk = _ChunkedConvolutionBackward.apply(
                dy, x, weight, geometry, ctx.chunks, need_x, ctx.weight_views > 0, ctx.bias_views > 0
            )
            return (dx, None, None, None, None, None, *per_chunk)
        mask = (need_x, need_weight, ctx.has_bias and need_bias)
        dx, d_weight, d_bias = geometry.backward(dy, x, weight, mask, [weight.shape[0]] if mask[2] else None)
        return (dx, d_weight, d_bias, None, None, None, *([None] * (ctx.weight_views + ctx.bias_views)))


class _ChunkedConvolutionBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, weight, geometry: ConvGeometry, chunks: int, need_x: bool, weight_chunks: bool,
                bias_chunks: bool):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(dy, x, weight)
        ctx.geometry, ctx.chunks = geometry, chunks
        ctx.weight_chunks, ctx.bias_chunks = weight_chunks, bias_chunks
        dx = geometry.backward(dy, x, weight, (True, False, False))[0] if need_x else None
        d_weights = []
        if weight_chunks:
            d_weights = [
                geometry.backward(dy_m, x_m, weight, (False, True, False))[1]
                for dy_m, x_m in zip(dy.chunk(chunks), x.chunk(chunks))
            ]
        d_biases = [d.clone() for d in _per_chunk_channel_sums(dy, chunks).unbind()] if bias_chunks else []
        return (dx, *d_weights, *d_biases)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, u_x, *cotangents):
        dy, x, weight = ctx.saved_tensors
        geometry: ConvGeometry = ctx.geometry
        chunks = ctx.chunks
        u_weights = list(cotangents[:chunks]) if ctx.weight_chunks else [None] * chunks
        u_biases = list(cotangents[chunks:] if ctx.weight_chunks else cotangents) if ctx.bias_chunks else [None] * chunks
        need_dy, need_x, need_weight = ctx.needs_input_grad[:3]
        dy_chunks, x_chunks = dy.chunk(chunks), x.chunk(chunks)

        grad_dy = grad_x = grad_weight = None
        if need_dy:
            grad_dy = geometry.conv(u_x, weight) if u_x is not None else torch.zeros_like(dy)
            for out, x_m, u_m, b_m in zip(grad_dy.chunk(chunks), x_chunks, u_weights, u_biases):
                if u_m is not None:
                    out.add_(geometry.conv(x_m, u_m, b_m))
                elif b_m is not None:
                    out.add_(b_m.view(1, -1, *([1] * (dy.dim() - 2))))
        if need_weight and u_x is not None:
            grad_weight = geometry.backward(dy, u_x, weight, (False, True, False))[1]
        if need_x and any(u is not None for u in u_weights):
            grad_x = torch.empty_like(x)
            for out, dy_m, x_m, u_m in zip(grad_x.chunk(chunks), dy_chunks, x_chunks, u_weights):
                if u_m is None:
                    out.zero_()
                else:
                    out.copy_(geometry.backward(dy_m, x_m, u_m, (True, False, False))[0])
        return grad_dy, grad_x, grad_weight, None, None, None, None, None


def _per_chunk_channel_sums(t: Tensor, chunks: int) -> Tensor:
    """(c, channels): sums of ``t`` over each chunk's samples and positions."""
    return t.reshape(chunks, t.shape[0] // chunks, t.shape[1], -1).sum((1, 3))


def chunked_convolution(
    x: Tensor, weight: Tensor, bias: Tensor | None, weight_views: list[Tensor], bias_views: list[Tensor],
    stride, padding, dilation, groups: int, chunks: int,
) -> Tensor:
    """``F.conv{1,2,3}d`` of a batch of ``chunks`` equal chunks; per-chunk gradients of the weight (and
    bias) leave through ``weight_views`` (and ``bias_views``), each a list of c aliases or empty."""
    geometry = ConvGeometry(weight.dim() - 2, stride, padding, dilation, groups)
    return _ChunkedConvolution.apply(x, weight, bias, geometry, chunks, len(weight_views), *weight_views, *bias_views)
