"""Train-mode batch normalisation with a double backward of a few fused passes.

PyTorch's double backward of ``native_batch_norm`` is written as ~100 separate elementwise and
reduction ops per call; on a CPU ResNet-18 it took about half the time of a gradient-collision
step.  :func:`batch_norm_train` (used by :mod:`trd.losses.double_backward_mode`) runs through
:class:`_BatchNormTrain`, whose backward is itself a custom function
(:class:`_BatchNormTrainBackward`) with a hand-derived backward.  Forward and first backward
stay the native fused kernels, so values, running-statistics updates and first-order gradients
are unchanged; only the second-order pass is replaced.

Derivation (per channel, sums over the M = N*H*W positions, x_hat = (x - mu) / sigma,
P(z) = z - mean(z) - x_hat * mean(z * x_hat)).  The first backward maps (dy, x, gamma) to

    dx = (gamma/sigma) P(dy),   d_gamma = sum(dy * x_hat),   d_beta = sum(dy).

Given cotangents (u, a, b) for (dx, d_gamma, d_beta), with S = <u, dx> + a d_gamma + b d_beta:

    dS/d dy    = (gamma/sigma) P(u) + a x_hat + b
    dS/d gamma = <u, P(dy)> / sigma
    dS/d x     = P(h)/sigma + s x_hat / M,  where
        h = -(gamma/sigma) [mean(x_hat dy) u + mean(u x_hat) dy] + a dy   (x_hat inside P)
        s = -(gamma/sigma^2) <u, P(dy)>                                   (sigma outside P)

and every term is a per-channel linear combination of u, dy and x, so each gradient is one
``addcmul`` chain after three per-channel reductions.
"""

from __future__ import annotations

import torch
from torch import Tensor

_aten = torch.ops.aten


class _BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors
        dx, d_weight, d_bias = _BatchNormTrainBackward.apply(dy, x, weight, mean, invstd, ctx.eps)
        return (
            dx,
            d_weight if weight is not None else None,
            d_bias if ctx.has_bias else None,
            None,
            None,
            None,
            None,
        )


class _BatchNormTrainBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, weight, mean, invstd, eps):
        dx, sum_dy_xhat, sum_dy = _aten.native_batch_norm_backward(
            dy, x, weight, None, None, mean, invstd, True, eps, [True, True, True]
        )
        ctx.save_for_backward(dy, x, weight, mean, invstd, sum_dy, sum_dy_xhat)
        ctx.eps = eps
        return dx, sum_dy_xhat, sum_dy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, u, a, b):
        dy, x, weight, mean, invstd, sum_dy, sum_dy_xhat = ctx.saved_tensors
        need_dy, need_x, need_weight = ctx.needs_input_grad[:3]
        channels = x.shape[1]
        count = x.numel() // channels
        gamma = weight if weight is not None else torch.ones_like(mean)

        def per_channel(t: Tensor) -> Tensor:
            return t.view(1, channels, *([1] * (x.dim() - 2)))

        # The native first backward's weight/bias outputs are exactly sum(u*x_hat) and sum(u).
        _, sum_u_xhat, sum_u = _aten.native_batch_norm_backward(
            u, x, weight, None, None, mean, invstd, True, ctx.eps, [False, True, True]
        )
        mean_u, mean_u_xhat = sum_u / count, sum_u_xhat / count
        mean_dy, mean_dy_xhat = sum_dy / count, sum_dy_xhat / count
        scale = gamma * invstd

        grad_dy = grad_x = grad_weight = None
        if need_dy:
            # (gamma/sigma) P(u) + a x_hat + b, with x_hat = (x - mu) * invstd.
            xhat_coeff = (a - scale * mean_u_xhat) * invstd
            constant = b - scale * mean_u - mean * xhat_coeff
            grad_dy = torch.addcmul(per_channel(constant), u, per_channel(scale))
            grad_dy.addcmul_(x, per_channel(xhat_coeff))
        if need_x or need_weight:
            # sum(u*dy) via the same fused reduction, with dy as the "input" at mean 0, invstd 1.
            sum_u_dy = _aten.native_batch_norm_backward(
                u, dy, None, None, None, torch.zeros_like(mean), torch.ones_like(invstd), True, 0.0,
                [False, True, False],
            )[1]
            u_dot_p_dy = sum_u_dy - count * (mean_u * mean_dy + mean_u_xhat * mean_dy_xhat)
            if need_weight and weight is not None:
                grad_weight = u_dot_p_dy * invstd
            if need_x:
                alpha_u = -scale * mean_dy_xhat
                alpha_dy = a - scale * mean_u_xhat
                s = -scale * invstd * u_dot_p_dy
                mean_h = alpha_u * mean_u + alpha_dy * mean_dy
                mean_h_xhat = alpha_u * mean_u_xhat + alpha_dy * mean_dy_xhat
                xhat_coeff = (s / count - mean_h_xhat * invstd) * invstd
                constant = -mean_h * invstd - mean * xhat_coeff
                grad_x = torch.addcmul(per_channel(constant), u, per_channel(alpha_u * invstd))
                grad_x.addcmul_(dy, per_channel(alpha_dy * invstd))
                grad_x.addcmul_(x, per_channel(xhat_coeff))
        return grad_dy, grad_x, grad_weight, None, None, None


def batch_norm_train(x: Tensor, weight, bias, running_mean, running_var, momentum: float, eps: float) -> Tensor:
    """Train-mode ``F.batch_norm`` (batch statistics, running buffers updated) with the cheap double backward."""
    return _BatchNormTrain.apply(x, weight, bias, running_mean, running_var, momentum, eps)
