"""Hessian-vector products of a chunk's loss by a one-sided finite difference of its gradient.

``H_m v ~= (g_m(theta + eps v) - g_m(theta)) / eps`` costs one more forward and backward of the chunk (3 units
of convolution work against the 6 of an exact double backward), with an error of O(eps |v|^2) from the
curvature's change plus O(machine eps |g_m| / eps) from round-off. The step balances the two the usual way
(Nocedal & Wright, sec. 8.1; Martens' Hessian-free): ``eps |v| = scale * sqrt(machine eps) * (1 + |theta|)``,
so the weights move by a fixed relative amount whatever the scale of v. The default scale is 0.1, not 1: batch
norm over a small chunk curves strongly, and at 1 the curvature term dominated on ResNet-18 (bench/README.md).
Norms are taken in float64, so huge weights give a finite step; a zero direction contributes nothing. The perturbed pass runs through
``torch.func.functional_call`` on copies of the parameters and buffers: the model, its running statistics and
any engine hooks on its parameters are untouched. It also replays the ReLU sign pattern of the unperturbed
forward (:class:`ReluPattern`): a ReLU network's gradient jumps where a unit changes sign, and a difference
quotient across one such jump is off by jump / eps however small eps is (measured: cosine -0.11 to the exact
gradient on trd's CNN in float32 without the replay, 0.999999 with it). With the pattern fixed the network is smooth along the
step, and the quotient tends to what autograd's double backward computes, in which ReLU has no curvature.
2-d max pooling's choice of maximum is replayed the same way; other kinks are not frozen.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode


def norm(tensors: Sequence[Tensor]) -> float:
    """The Euclidean norm of a list of tensors, accumulated in float64 (no overflow for float32 weights)."""
    if not tensors:
        return 0.0
    # One host synchronisation for the whole list: this runs c + 1 times per step.
    norms = torch.stack([torch.linalg.vector_norm(t.detach(), dtype=torch.float64) for t in tensors])
    return torch.linalg.vector_norm(norms).item()


def step_size(param_norm: float, direction_norm: float, dtype: torch.dtype, scale: float = 0.1) -> float:
    """eps with eps * |v| = scale * sqrt(machine eps of dtype) * (1 + |theta|); 0 for a zero or non-finite v."""
    if scale <= 0:
        raise ValueError(f"finite-difference scale must be positive, got {scale}")
    if not (direction_norm > 0 and math.isfinite(direction_norm) and math.isfinite(param_norm)):
        return 0.0
    return scale * math.sqrt(torch.finfo(dtype).eps) * (1.0 + param_norm) / direction_norm


def check_precision(params: Sequence[Tensor]) -> None:
    """Half-precision weights leave no digits for a difference quotient."""
    half = {p.dtype for p in params} - {torch.float32, torch.float64}
    if half:
        raise ValueError(f"hvp=finite_difference needs float32 or float64 weights, got {sorted(map(str, half))}: "
                         "set deepspeed.precision=fp32 or use dispose.hvp=exact")


_RELUS = (F.relu, F.relu_, torch.relu, torch.relu_)
_MAX_POOLS = (F.max_pool2d, F._max_pool2d, F.max_pool2d_with_indices)


class ReluPattern(TorchFunctionMode):
    """Records which units of every ReLU are positive and where every 2-d max pool found its maxima in a forward
    (in call order), or replays a recorded pattern: inside a replay, relu(z) is z * mask and a max pool gathers
    the recorded positions."""

    def __init__(self, masks: list[Tensor] | None = None, rows: slice | None = None):
        super().__init__()
        self.recording = masks is None
        self.masks = [] if masks is None else masks
        self.rows = rows
        self.index = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _RELUS and func not in _MAX_POOLS:
            return func(*args, **kwargs)
        if self.recording:
            if func in _RELUS:
                output = func(*args, **kwargs)
                self.masks.append(output.detach() > 0)
                return output
            output, indices = F.max_pool2d_with_indices(*args, **{**kwargs, "return_indices": True})
            self.masks.append(indices)
            return (output, indices) if kwargs.get("return_indices") or func is F.max_pool2d_with_indices else output
        if self.index >= len(self.masks):
            raise RuntimeError("finite differences: the perturbed forward is not the recorded one (more ReLU or "
                               "max-pooling calls)")
        recorded = self.masks[self.index] if self.rows is None else self.masks[self.index][self.rows]
        self.index += 1
        if func in _RELUS:
            return args[0] * recorded
        # The input flattened per (sample, channel), gathered at the recorded maxima.
        z = args[0]
        output = z.flatten(-2).gather(-1, recorded.flatten(-2)).view(recorded.shape)
        return (output, recorded) if kwargs.get("return_indices") or func is F.max_pool2d_with_indices else output

    def chunk(self, index: int, chunks: int, batch_rows: int | None) -> ReluPattern:
        """The replay for chunk ``index``: rows of a whole-batch recording (``batch_rows`` per chunk), or its own
        share of a recording made chunk after chunk (``batch_rows=None``)."""
        if batch_rows is not None:
            return ReluPattern(self.masks, slice(index * batch_rows, (index + 1) * batch_rows))
        per_chunk = len(self.masks) // chunks
        return ReluPattern(self.masks[index * per_chunk:(index + 1) * per_chunk])


RngState = tuple[Tensor, Tensor | None]


def rng_state(device: torch.device) -> RngState:
    """The generator state a forward on ``device`` draws its dropout masks from."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def replayed_rng(state: RngState | None, device: torch.device) -> Iterator[None]:
    """Runs the body with the generators at ``state`` (same dropout masks), then puts them back as they were."""
    if state is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def shifted_gradient(model: nn.Module, names: Sequence[str], params: Sequence[Tensor], direction: Sequence[Tensor],
                     eps: float, inputs: Tensor, targets: Tensor, criterion: Callable[[Tensor, Tensor], Tensor],
                     rng: RngState | None = None, pattern: ReluPattern | None = None) -> list[Tensor]:
    """grad of criterion(model(inputs), targets) at theta + eps * direction, w.r.t. the named parameters, with the
    dropout masks of ``rng`` and the ReLU pattern ``pattern`` replayed."""
    shifted = {n: torch.add(p.detach(), v, alpha=eps).requires_grad_() for n, p, v in zip(names, params, direction)}
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # train-mode batch norm updates the copies
    replay = pattern if pattern is not None else contextlib.nullcontext()
    with torch.enable_grad(), replayed_rng(rng, inputs.device), replay:
        loss = criterion(functional_call(model, (shifted, buffers), (inputs,)), targets)
    return list(torch.autograd.grad(loss, list(shifted.values()), allow_unused=True, materialize_grads=True))
