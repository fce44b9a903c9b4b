"""Train-mode batch normalisation of a batch of c chunks, each chunk with its own statistics, with a
double backward of a few fused passes.

PyTorch's double backward of ``native_batch_norm`` is written as ~100 separate elementwise and
reduction ops per call; on a CPU ResNet-18 it took about half the time of a gradient-collision
step.  Here forward and first backward stay the native fused kernels, so values, running-statistics
updates and first-order gradients are unchanged; only the second-order pass is replaced.  With
c = 1 this is the plain layer (:mod:`trd.losses.double_backward_mode` routes per-chunk GC forwards
through it); with c chunks it serves the batched GC forward (:mod:`trd.losses.chunked_forward`).

Gradient collision forwards c chunks as if each were alone (on its own rank), so in train mode
every chunk is normalised with its own mean and variance.  The batch stays one tensor (the
convolutions around it see the whole batch); the batch-norm kernels run per chunk, on
contiguous slices, writing into the whole-batch outputs.  Those are PyTorch's fused native
kernels: they are memory-bound, so c small calls cost about what one large call costs, and
the running buffers get the c momentum updates of c consecutive chunk forwards, exactly.

As in :mod:`trd.losses.chunked_convolution`, the shared affine parameters do the computing and
their c chunk views (aliases ``gamma_m``, ``beta_m``) carry the per-chunk gradients out of the
backward that computes GC's chunk gradients; any other backward returns the sums to the shared
parameters.

Derivation (per chunk and channel, sums over that chunk's M = n*L positions,
x_hat = (x - mu) * invstd, P(z) = z - mean(z) - x_hat * mean(z * x_hat)).  The first backward:

    dx = gamma invstd P(dy),   d gamma_c = sum(dy * x_hat),   d beta_c = sum(dy).

Given cotangents (u, a, b) of (dx, d gamma_c, d beta_c) (a, b: the (c, C) stacks of the chunk
views' cotangents), with S = <u, dx> + <a, d gamma_c> + <b, d beta_c>:

    dS/d dy    = gamma invstd P(u) + a x_hat + b
    dS/d gamma = sum over chunks of invstd <u, P(dy)>
    dS/d x     = invstd P(h) + s x_hat / M,  where
        h = -gamma invstd [mean(x_hat dy) u + mean(u x_hat) dy] + a dy
        s = -gamma invstd^2 <u, P(dy)>

Every term is a per-(chunk, channel) linear combination of u, dy and x: a few per-chunk fused
reductions, then each result is one ``addcmul`` chain over the whole batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trd.losses.chunk_gradient_pass import wants_chunk_gradients


def _view(t: Tensor, chunks: int) -> Tensor:
    return t.reshape(chunks, t.shape[0] // chunks, t.shape[1], -1)


def _coefficient(values: Tensor) -> Tensor:
    """(c, C) -> broadcastable against a (c, n, C, L) view."""
    return values[:, None, :, None]


_aten = torch.ops.aten


class _ChunkedBatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, chunks, weight_views: int, *views):
        # ``views``: ``weight_views`` gamma views (0 or c), then the beta views (0 or c).
        y = torch.empty_like(x)
        mean = x.new_empty(chunks, x.shape[1])
        invstd = torch.empty_like(mean)
        for m, (x_m, y_m) in enumerate(zip(x.chunk(chunks), y.chunk(chunks))):
            _aten.native_batch_norm.out(x_m, weight, bias, running_mean, running_var, True, momentum, eps,
                                        out=y_m, save_mean=mean[m], save_invstd=invstd[m])
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.chunks, ctx.eps, ctx.has_bias = chunks, eps, bias is not None
        ctx.weight_views, ctx.bias_views = weight_views, len(views) - weight_views
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors
        no_views = [None] * (ctx.weight_views + ctx.bias_views)
        to_views = wants_chunk_gradients() and ctx.weight_views + ctx.bias_views > 0
        if to_views or torch.is_grad_enabled():
            # GC's chunk-gradient pass, or any backward that records a graph: the differentiable route.
            dx, d_weight_chunks, d_bias_chunks = _ChunkedBatchNormTrainBackward.apply(
                dy, x, weight, mean, invstd, ctx.eps, ctx.chunks
            )
            if not to_views:
                d_weight = d_weight_chunks.sum(0) if weight is not None else None
                d_bias = d_bias_chunks.sum(0) if ctx.has_bias else None
                return (dx, d_weight, d_bias, None, None, None, None, None, None, *no_views)
            # Separate tensors (not views of the saved sums): GC may overwrite chunk gradients in place.
            per_chunk = []
            if ctx.weight_views:
                per_chunk += [d.clone() for d in d_weight_chunks.unbind()]
            if ctx.bias_views:
                per_chunk += [d.clone() for d in d_bias_chunks.unbind()]
            return (dx, None, None, None, None, None, None, None, None, *per_chunk)
        dx, d_weight_chunks, d_bias_chunks = _first_backward(dy, x, weight, mean, invstd, ctx.eps, ctx.chunks)
        need_weight, need_bias = ctx.needs_input_grad[1:3]
        d_weight = d_weight_chunks.sum(0) if weight is not None and need_weight else None
        d_bias = d_bias_chunks.sum(0) if ctx.has_bias and need_bias else None
        return (dx, d_weight, d_bias, None, None, None, None, None, None, *no_views)


def _first_backward(dy, x, weight, mean, invstd, eps: float, chunks: int):
    """dx for the whole batch and (c, C) sums of dy * x_hat and of dy, chunk by chunk with the native kernel."""
    dy = dy.contiguous()
    dx = torch.empty_like(x)
    sum_dy_xhat, sum_dy = torch.empty_like(mean), torch.empty_like(mean)
    for m, (dy_m, x_m, dx_m) in enumerate(zip(dy.chunk(chunks), x.chunk(chunks), dx.chunk(chunks))):
        _aten.native_batch_norm_backward.out(dy_m, x_m, weight, None, None, mean[m], invstd[m], True, eps,
                                             [True, True, True], out0=dx_m, out1=sum_dy_xhat[m], out2=sum_dy[m])
    return dx, sum_dy_xhat, sum_dy


def _chunk_sums(u, x, mean, invstd, eps: float, chunks: int) -> tuple[Tensor, Tensor]:
    """(c, C) sums of u * x_hat and of u, where x_hat uses the given per-chunk mean and invstd."""
    sum_u_xhat, sum_u = torch.empty_like(mean), torch.empty_like(mean)
    for m, (u_m, x_m) in enumerate(zip(u.chunk(chunks), x.chunk(chunks))):
        # The native first backward's weight and bias outputs are exactly these two reductions.
        _, sum_u_xhat[m], sum_u[m] = _aten.native_batch_norm_backward(
            u_m, x_m, None, None, None, mean[m], invstd[m], True, eps, [False, True, True]
        )
    return sum_u_xhat, sum_u


class _ChunkedBatchNormTrainBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, weight, mean, invstd, eps: float, chunks: int):
        dx, sum_dy_xhat, sum_dy = _first_backward(dy, x, weight, mean, invstd, eps, chunks)
        ctx.save_for_backward(dy, x, weight, mean, invstd, sum_dy_xhat, sum_dy)
        ctx.chunks, ctx.eps = chunks, eps
        return dx, sum_dy_xhat, sum_dy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, u, a, b):
        dy, x, weight, mean, invstd, sum_dy_xhat, sum_dy = ctx.saved_tensors
        chunks, eps = ctx.chunks, ctx.eps
        need_dy, need_x, need_weight = ctx.needs_input_grad[:3]
        u = u.contiguous()
        uv, dyv, xv = _view(u, chunks), _view(dy, chunks), _view(x, chunks)
        count = xv.shape[1] * xv.shape[3]
        gamma = weight if weight is not None else torch.ones_like(mean[0])
        scale = gamma * invstd

        sum_u_xhat, sum_u = _chunk_sums(u, x, mean, invstd, eps, chunks)
        mean_u, mean_u_xhat = sum_u / count, sum_u_xhat / count
        mean_dy, mean_dy_xhat = sum_dy / count, sum_dy_xhat / count

        grad_dy = grad_x = grad_weight = None
        if need_dy:
            # gamma invstd P(u) + a x_hat + b, with x_hat = (x - mu) * invstd.
            xhat_coefficient = (a - scale * mean_u_xhat) * invstd
            constant = b - scale * mean_u - mean * xhat_coefficient
            grad_dy = torch.addcmul(_coefficient(constant), uv, _coefficient(scale))
            grad_dy.addcmul_(xv, _coefficient(xhat_coefficient))
            grad_dy = grad_dy.view(x.shape)
        if need_x or need_weight:
            # sum(u * dy) through the same fused reduction, with dy as the "input" at mean 0 and invstd 1.
            zeros, ones = torch.zeros_like(mean), torch.ones_like(invstd)
            sum_u_dy = _chunk_sums(u, dy.contiguous(), zeros, ones, 0.0, chunks)[0]
            u_dot_p_dy = sum_u_dy - count * (mean_u * mean_dy + mean_u_xhat * mean_dy_xhat)
            if need_weight and weight is not None:
                grad_weight = (u_dot_p_dy * invstd).sum(0)
            if need_x:
                alpha_u = -scale * mean_dy_xhat
                alpha_dy = a - scale * mean_u_xhat
                s = -scale * invstd * u_dot_p_dy
                mean_h = alpha_u * mean_u + alpha_dy * mean_dy
                mean_h_xhat = alpha_u * mean_u_xhat + alpha_dy * mean_dy_xhat
                xhat_coefficient = (s / count - mean_h_xhat * invstd) * invstd
                constant = -mean_h * invstd - mean * xhat_coefficient
                grad_x = torch.addcmul(_coefficient(constant), uv, _coefficient(alpha_u * invstd))
                grad_x.addcmul_(dyv, _coefficient(alpha_dy * invstd))
                grad_x.addcmul_(xv, _coefficient(xhat_coefficient))
                grad_x = grad_x.view(x.shape)
        return grad_dy, grad_x, grad_weight, None, None, None, None


def chunked_batch_norm_train(
    x: Tensor, weight, bias, weight_views: list[Tensor], bias_views: list[Tensor], running_mean, running_var,
    momentum: float, eps: float, chunks: int,
) -> Tensor:
    """Train-mode ``F.batch_norm`` with each of ``chunks`` equal chunks normalised by its own statistics;
    per-chunk gradients of gamma (beta) leave through ``weight_views`` (``bias_views``), c aliases or empty."""
    return _ChunkedBatchNormTrain.apply(
        x.contiguous(), weight, bias, running_mean, running_var, momentum, eps, chunks, len(weight_views),
        *weight_views, *bias_views,
    )


def chunked_batch_norm_eval(x: Tensor, weight, bias, running_mean, running_var, eps: float, chunks: int):
    """Eval-mode ``F.batch_norm`` (running statistics) with per-chunk affine parameters, plain autograd ops:
    ``weight``/``bias`` are (C,) tensors shared by all chunks or (c, C) stacks of chunk views."""
    invstd = (running_var + eps).rsqrt()
    scale = invstd.expand(chunks, -1) if weight is None else weight.expand(chunks, -1) * invstd
    shift = -running_mean * scale if bias is None else bias.expand(chunks, -1) - running_mean * scale
    return torch.addcmul(_coefficient(shift), _view(x, chunks), _coefficient(scale)).view(x.shape)
