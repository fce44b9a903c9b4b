"""Gradient-collision (GC) and normalised gradient-collision (NGC) losses.

The disposal stage of Disposable Transfer Learning (Koh et al., ICCV 2023) makes the source
task unlearnable by driving the gradients of different source mini-batch chunks apart.  With
``g_m`` the gradient of chunk ``m``'s mean cross-entropy w.r.t. the trainable parameters and
``c`` chunks in total (``chunks`` per process times the world size)::

    L_gc  = 1/C(c,2) * sum_{m<n} g_m . g_n
    L_ngc = 1/C(c,2) * sum_{m<n} cos(g_m, g_n)

Gradient, and why it costs O(c) Hessian-vector products
-------------------------------------------------------
Differentiating L through every ``g_m`` gives ``grad L = sum_m H_m v_m`` with ``H_m`` the Hessian
of chunk ``m``'s loss and ``v_m = dL/dg_m``:

* GC:  ``v_m = (G - g_m) / C(c,2)`` with ``G = sum_n g_n``;
* NGC: ``v_m = 1/C(c,2) * [ sum_{n!=m} g_n/(|g_m||g_n|) - (sum_{n!=m} cos_mn) g_m/|g_m|^2 ]``.

Each ``v_m`` is a constant once all chunk gradients are known, so one double-backward per
chunk, ``autograd.grad(g_m, params, grad_outputs=v_m)``, produces ``H_m v_m``: c HVPs in all,
never the c^2 double backwards of differentiating every pair.

Design (time first, memory second)
----------------------------------
The call computes every chunk's gradient with ``torch.autograd.grad(create_graph=True)`` and
*keeps* the graph that differentiates them; the outer ``loss.backward()`` runs the custom backward
of :class:`_CollisionFunction`, which turns the c chunk gradients into the c directions ``v_m`` and
differentiates once more.  Two executions compute the same loss and gradient:

* ``batched`` (default for models of linear, convolution and batch-norm layers, ResNet and WRN
  among them): one forward of the whole batch under :class:`trd.losses.chunked_forward.ChunkedForward`,
  with chunk-wise batch-norm statistics and chunk views of every parameter through which each
  chunk's gradient leaves, then ONE backward for all c chunk gradients and ONE Hessian-vector
  product ``autograd.grad([g_1..g_c], params, grad_outputs=[v_1..v_c])``.  Kernels with the
  shared weights see the whole batch; only the terms that involve a chunk's own weight gradient
  or direction run chunk by chunk (a third of the convolution work), so small chunks cost little.
  For GC the directions overwrite the chunk gradients' storage in place (``g_m - G``, the factor
  ``-1/C(c,2)`` applied once to the result), so the backward allocates no c x P buffer;
* ``per_chunk`` (any model, ViT included): each chunk forwarded on its own under
  :func:`trd.losses.double_backward_mode.fast_double_backward` (hand-written double backwards for
  convolutions and train-mode batch norms, whose native ones are 2x and ~10x slower than needed
  on CPU), c graphs, and c HVPs ``autograd.grad(g_m, params, grad_outputs=v_m)`` one chunk at a
  time, each chunk's graph freed as soon as its HVP is done; inside
  :func:`trd.losses.conv_double_backward.deferred_weight_gradients` the weight terms of
  large-weight convolutions are summed over all chunks in one call instead of 2c small ones.

Either way:

* compute: one forward, one graph-recording backward and one double backward per sample; no
  recomputation, and dropout masks are the same in the gradient and in its derivative.  For a
  convolutional network that is about 3x the convolution work of a plain step (forward 1,
  backward 2, double backward 6 units), the floor for any exact HVP-based method;
* GC never forms a c x P matrix or the c x c Gram matrix: G, the pair sum and the directions
  are per-parameter foreach operations (P = number of parameters);
* memory: the activations of one full batch plus the saved tensors of the recorded backward
  (the total does not grow with c), plus the c chunk gradients (c x P); NGC adds a c x P matrix
  of the chunk gradients (flat, for its Gram matrix and for the all-gather);
* ``.grad`` is written only by the outer backward (chunk gradients come from
  ``torch.autograd.grad``), so gradient hooks of an engine fire once, on the final gradient.

A loss on the same forward (the fused disposal step)
----------------------------------------------------
:func:`collision_with_joint_loss` also returns a second loss computed from the GC step's own forward of
the source batch (SRC-KD in the disposal step), whose gradient joins the Hessian-vector product's
backward: the product already traverses the forward graph, so the second loss costs no forward and
no backward of its own (one traversal instead of two; bench/README.md, "Disposal step"). It sees the
chunk-wise batch-norm statistics of GC's forward, as a model data-parallel over c ranks would.

Finite differences
------------------
``hvp="finite_difference"`` takes the chunk gradients without recording their graph and replaces each
Hessian-vector product by ``(g_m(theta + eps v_m) - g_m(theta)) / eps`` (:mod:`trd.losses.finite_difference`):
one more forward and backward per chunk, about 6 units of convolution work against the exact 9, at the
price of an approximation (its cosine to the exact gradient: bench/README.md, "Fused disposal step").

Diagnostics
-----------
``return_stats=True`` also returns :class:`GCStats` (|G|^2, sum_m |g_m|^2, mean pairwise cosine
of the chunk gradients) as device tensors; for GC the cosine costs one more pass over the chunk
gradients, so ask for the statistics on the steps that log them.

BatchNorm
---------
In train mode BatchNorm normalises each chunk with the chunk's own statistics, exactly as on a
rank that sees only that chunk.  Nothing is recomputed, so the running statistics see c ordinary
momentum updates per call (one per chunk), just as c consecutive training forwards would.  ``SyncBatchNorm`` in train mode across several ranks is
rejected: it would mix chunks of different ranks into one normalisation.

Distributed runs
----------------
With ``torch.distributed`` initialised, the chunks of all ranks together are the c of the
formula (each rank passes its own batch and the same ``chunks``).  Communication per call:

* GC, forward: ONE all-reduce of a flat buffer holding the summed local chunk gradient plus five
  scalars (the within-rank pair sum, |G_rank|^2 for the cross-rank pairs, the local chunk count,
  and the local pair-cosine sum and pair count used only for the logged statistic);
* GC, backward: ONE all-reduce of the local HVP sum, so every rank ends with the full gradient
  (with ``reduce_gradient=False``: none, see below);
* NGC needs every pairwise product ``g_m . g_n``, which cannot be formed across ranks from sums
  alone, so NGC all-gathers the c chunk gradients (c x parameter size, once, in the forward)
  and then all-reduces the HVP sum in the backward like GC.

Because the backward already sums over ranks, every rank holds the complete GC gradient; an
engine that averages gradients across ranks afterwards (DDP, DeepSpeed) leaves it unchanged,
while averaging a per-rank retain loss added to it as usual.  Such an engine's all-reduce can do
the backward's reduction instead: with ``reduce_gradient=False`` each rank leaves world_size times
its own share and issues no collective in the backward, and the engine's average is the exact
gradient (trd's dispose stage does this: two all-reduces per step, the paper's Algorithm 1).
Pass the unwrapped module (not a DDP wrapper): the chunk forwards must not trigger the wrapper's
own gradient reduction.

Attention
---------
``F.scaled_dot_product_attention``'s fused kernels have no double backward, so the per-chunk
forwards run under ``sdpa_kernel([SDPBackend.MATH])`` (attention models are never batched: their
parameters live outside the layers the chunked forward splits).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from trd.losses import finite_difference, flat_collectives
from trd.losses.chunk_gradient_pass import chunk_gradient_pass
from trd.losses.chunked_forward import ChunkedForward, supports_chunked_forward
from trd.losses.conv_double_backward import deferred_weight_gradients
from trd.losses.double_backward_mode import fast_double_backward

Criterion = Callable[[Tensor, Tensor], Tensor]
HVPS = ("exact", "finite_difference")

# A chunk gradient smaller than this is treated as having this norm, so that NGC stays finite
# (F.cosine_similarity guards the same way).
_NORM_EPS = 1e-12


@dataclass(frozen=True)
class GCStats:
    """Diagnostic terms of one GC/NGC call, as 0-dim detached tensors on the parameters' device.

    ``total_sq_norm`` is ``|G|^2`` with ``G`` the sum of all c chunk gradients,
    ``sum_chunk_sq_norms`` is ``sum_m |g_m|^2`` and ``mean_pair_cosine`` the mean cosine over
    the chunk pairs whose inner products this process can form: all c(c-1)/2 pairs in one
    process and for NGC; for multi-rank GC (which never gathers gradients) the pairs of chunks
    on the same rank, NaN when every rank has a single chunk.
    """

    total_sq_norm: Tensor
    sum_chunk_sq_norms: Tensor
    mean_pair_cosine: Tensor
    chunks: int

    def as_floats(self) -> dict[str, float]:
        """Plain floats for a logger; synchronises with the device once per value."""
        return {
            "total_sq_norm": self.total_sq_norm.item(),
            "sum_chunk_sq_norms": self.sum_chunk_sq_norms.item(),
            "mean_pair_cosine": self.mean_pair_cosine.item(),
        }


@dataclass(frozen=True)
class JointTerm:
    """A loss of the GC step's own forward of the source batch.

    ``loss(outputs, rows)``: the mean loss over the batch rows ``rows`` (a slice of the batch GC was given),
    from the forward's outputs on those rows; called once for the whole batch (batched execution) or once
    per chunk (per chunk), so it must be a mean over samples. ``forward(x) -> (gc_logits, outputs)`` runs
    the model once for both (default: the model's logits serve both).
    """

    loss: Callable[[Tensor, slice], Tensor]
    forward: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None


def gradient_collision_loss(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    chunks: int,
    normalized: bool = False,
    return_stats: bool = False,
    criterion: Criterion = F.cross_entropy,
    process_group: dist.ProcessGroup | None = None,
    reduce_gradient: bool = True,
    execution: str = "auto",
    hvp: str = "exact",
    fd_scale: float = 0.1,
    joint: JointTerm | None = None,
) -> Tensor | tuple[Tensor, GCStats] | tuple[Tensor, Tensor | None, GCStats | None]:
    """GC (``normalized=False``) or NGC loss of ``model`` on a source batch split into chunks.

    ``inputs``/``targets`` are this process's batch, split into ``chunks`` equal chunks; each
    chunk is forwarded as if on its own (batch-norm statistics per chunk) and its gradient is taken of ``criterion(model(x_m), y_m)``
    (mean cross-entropy by default) w.r.t. the parameters that require grad.
    ``loss.backward()`` leaves exactly ``grad L`` in those parameters' ``.grad`` (accumulating,
    like any loss; parameters the loss does not use get zeros).  With ``return_stats=True``
    returns ``(loss, GCStats)``.  Called with grad mode off, the loss value is computed without
    recording the double-backward graph.

    ``reduce_gradient=False`` is for a data-parallel engine (DeepSpeed, DDP) that averages gradients over
    ranks in its own all-reduce: backward then skips GC's result all-reduce and leaves world_size times
    this rank's share, so that the engine's average is exactly ``grad L`` on every rank. The result
    reduction then rides on the engine's all-reduce, together with any other loss's gradient.

    ``execution``: ``"batched"`` forwards all chunks at once (:mod:`trd.losses.chunked_forward`; needs a
    float32/float64 model whose trainable parameters all sit in linear, convolution and batch-norm
    layers), ``"per_chunk"`` forwards them one by one (any model), ``"auto"`` (default) picks batched
    where the model allows it.  Both give the same loss and gradient.

    ``hvp="finite_difference"`` replaces each chunk's double backward by a difference of its gradient along its
    direction (:mod:`trd.losses.finite_difference`, step scaled by ``fd_scale``); the chunk gradients are then
    taken without graphs. ``joint``: use :func:`collision_with_joint_loss`.
    """
    if hvp not in HVPS:
        raise ValueError(f"hvp={hvp!r} is not one of {', '.join(HVPS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("gradient_collision_loss: the model has no parameter that requires grad")
    world = _world_size(process_group)
    _check_chunking(inputs.shape[0], chunks, world)
    _reject_cross_rank_batchnorm(model, world)

    differentiable = torch.is_grad_enabled()
    exact = hvp == "exact"
    if not exact:
        finite_difference.check_precision(params)
    # A difference quotient needs the chunk's own dropout masks again, which only a chunk's own forward records.
    batched = _batched(execution, model, inputs) and (exact or not _has_active_dropout(model))
    keep = differentiable and joint is not None and not exact  # the joint loss's own backward comes later
    pattern = finite_difference.ReluPattern() if not exact and differentiable else contextlib.nullcontext()
    with pattern:
        if batched:
            graphs: _ChunkGraphs = _BatchedChunkGraphs(model, params, inputs, targets, chunks, criterion,
                                                       differentiable and exact, joint, keep)
        else:
            graphs = _PerChunkGraphs(model, params, inputs, targets, chunks, criterion, differentiable and exact,
                                     joint, keep, record_rng=not exact)
    if not exact and differentiable:
        rows = inputs.shape[0] // chunks if batched else None
        graphs = _FiniteDifferenceGraphs(graphs, model, inputs, targets, chunks, criterion, fd_scale,
                                         [pattern.chunk(m, chunks, rows) for m in range(chunks)])
    values = graphs.values()
    if normalized:
        geometry: _Geometry = _CosineGeometry(values, world, process_group, return_stats)
    else:
        geometry = _CollisionGeometry(values, world, process_group, return_stats)

    joint_value = graphs.joint_value()
    if differentiable:
        state = _BackwardState(graphs, geometry, params, world, process_group, reduce_gradient)
        if joint is None:
            loss = _CollisionFunction.apply(state, *params)
        else:
            loss, joint_value = _CollisionWithJointFunction.apply(state, *params)
    else:
        loss = geometry.value
    if joint is not None:
        return loss, joint_value, (geometry.stats if return_stats else None)
    return (loss, geometry.stats) if return_stats else loss


def collision_with_joint_loss(model: nn.Module, inputs: Tensor, targets: Tensor, chunks: int,
                              joint: JointTerm | None, **options) -> tuple[Tensor, Tensor | None, GCStats | None]:
    """:func:`gradient_collision_loss` (same ``options``) and ``joint``'s loss on the same forward:
    ``(gc, joint_loss, stats)``, joint_loss None without ``joint``.

    Both losses are ordinary differentiable scalars (``stats`` is None unless ``return_stats=True``); one backward
    through either or both runs a single traversal of the forward graph (under ``hvp="finite_difference"`` the
    joint loss gets a backward of its own). ``reduce_gradient`` concerns GC's share only: the joint loss is per
    rank, like any loss an engine averages.
    """
    if joint is not None:
        return gradient_collision_loss(model, inputs, targets, chunks, joint=joint, **options)
    result = gradient_collision_loss(model, inputs, targets, chunks, **options)
    loss, stats = result if options.get("return_stats") else (result, None)
    return loss, None, stats


def _world_size(group: dist.ProcessGroup | None) -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return 1


def _check_chunking(batch: int, chunks: int, world: int) -> None:
    if chunks * world < 2:
        raise ValueError(
            f"gradient collision needs at least 2 chunks in total, got chunks={chunks} on "
            f"{world} process(es); pass chunks>=2 (or run on more ranks)"
        )
    if chunks < 1 or batch % chunks != 0:
        raise ValueError(
            f"a batch of {batch} does not split into {chunks} equal chunks; use a batch size "
            f"divisible by chunks={chunks} or a chunk count that divides {batch}"
        )


def _reject_cross_rank_batchnorm(model: nn.Module, world: int) -> None:
    if world < 2:
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.SyncBatchNorm) and module.training:
            raise ValueError(
                f"SyncBatchNorm '{name}' would normalise chunks of different ranks together; "
                "convert it to BatchNorm for gradient collision"
            )


def _has_active_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 and m.training for m in model.modules())


def _batched(execution: str, model: nn.Module, inputs: Tensor) -> bool:
    if execution not in ("auto", "batched", "per_chunk"):
        raise ValueError(f"execution={execution!r} is not one of 'auto', 'batched', 'per_chunk'")
    if execution == "per_chunk":
        return False
    supported = supports_chunked_forward(model, inputs)
    if execution == "batched" and not supported:
        raise ValueError(
            "execution='batched' needs a float32/float64 model (no autocast) whose trainable parameters all sit in "
            "nn.Linear, nn.Conv*d (zero padding) or nn.BatchNorm*d (numeric momentum) layers; use "
            "execution='per_chunk' for this model"
        )
    return supported


class _ChunkGraphs:
    """The chunk gradients g_m and, until the backward, the graphs that differentiate them."""

    # Per local chunk, one gradient per parameter (carrying its graph when differentiable); the backward
    # drops them as it goes.
    chunk_grads: list[list[Tensor] | None]

    # The joint loss per part of the forward (the whole batch, or each chunk), with its graph until the backward.
    joint_parts: list[Tensor | None]

    # Per local chunk, the generator state its forward drew dropout masks from; empty unless recorded.
    rng_states: list

    def values(self) -> list[list[Tensor]]:
        """Detached g_m, one list of per-parameter tensors per local chunk."""
        return [[g.detach() for g in grads] for grads in self.chunk_grads]

    def joint_value(self) -> Tensor | None:
        """The joint loss's value (detached), None without a joint term."""
        if not self.joint_parts:
            return None
        return torch.stack([part.detach() for part in self.joint_parts]).sum()

    def hessian_vector_sum(self, geometry: _Geometry, params: list[Tensor],
                           joint_weight: Tensor | None = None) -> list[Tensor | None]:
        """sum_m H_m v_m + joint_weight * grad(joint loss) per parameter (None where nothing reached it); frees
        the graphs."""
        raise NotImplementedError


def _forward(model: nn.Module, joint: JointTerm | None, x: Tensor) -> tuple[Tensor, Tensor | None]:
    if joint is None:
        return model(x), None
    if joint.forward is None:
        logits = model(x)
        return logits, logits
    return joint.forward(x)


class _PerChunkGraphs(_ChunkGraphs):
    """Each chunk forwarded on its own: c graphs and c Hessian-vector products; works for any model."""

    def __init__(self, model, params, inputs, targets, chunks: int, criterion: Criterion, differentiable: bool,
                 joint: JointTerm | None = None, keep_graph: bool = False, record_rng: bool = False):
        size = inputs.shape[0] // chunks
        self.chunk_grads = []
        self.joint_parts = []
        self.rng_states = []
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            for m, (x, y) in enumerate(zip(inputs.split(size), targets.split(size))):
                if record_rng:
                    self.rng_states.append(finite_difference.rng_state(x.device))
                with fast_double_backward():
                    logits, outputs = _forward(model, joint, x)
                if joint is not None:
                    # Equal chunks: the batch mean is the mean of the chunk means.
                    self.joint_parts.append(joint.loss(outputs, slice(m * size, (m + 1) * size)) / chunks)
                loss = criterion(logits, y)
                grads = torch.autograd.grad(loss, params, create_graph=differentiable,
                                            retain_graph=differentiable or keep_graph, allow_unused=True,
                                            materialize_grads=True)
                self.chunk_grads.append(list(grads))

    def hessian_vector_sum(self, geometry, params, joint_weight=None):
        result: list[Tensor | None] = [None] * len(params)
        with deferred_weight_gradients(params) as deferred:
            for index in range(len(self.chunk_grads)):
                grads = self.chunk_grads[index]
                part = self.joint_parts[index] if self.joint_parts else None
                # Drop this chunk's graph as soon as its HVP has run, so memory falls chunk by chunk.
                self.chunk_grads[index] = None
                if self.joint_parts:
                    self.joint_parts[index] = None
                direction = geometry.direction(index)
                linked = [(g, v) for g, v in zip(grads, direction) if g.requires_grad]
                if joint_weight is not None and part is not None and part.requires_grad:
                    linked.append((part, joint_weight))
                del part
                if linked:
                    hvp = torch.autograd.grad(
                        [g for g, _ in linked], params, grad_outputs=[v for _, v in linked], allow_unused=True
                    )
                    _accumulate(result, hvp)
                del grads, direction, linked
        summed_weights = deferred.flush()
        _accumulate(result, [summed_weights.get(i) for i in range(len(params))])
        return result


class _BatchedChunkGraphs(_ChunkGraphs):
    """All chunks in one forward (:mod:`trd.losses.chunked_forward`): one graph, one Hessian-vector product."""

    def __init__(self, model, params, inputs, targets, chunks: int, criterion: Criterion, differentiable: bool,
                 joint: JointTerm | None = None, keep_graph: bool = False):
        self.rng_states = []
        mode = ChunkedForward(model, params, chunks)
        with torch.enable_grad():
            with mode:
                logits, outputs = _forward(model, joint, inputs)
            self.joint_parts = [] if joint is None else [joint.loss(outputs, slice(None))]
            loss = sum(criterion(l_m, y_m) for l_m, y_m in zip(logits.chunk(chunks), targets.chunk(chunks)))
            # Chunk-major: (chunk 0: every used parameter's view), (chunk 1: ...), ...
            used = [i for i, p in enumerate(params) if id(p) in mode.views]
            views = [mode.views[id(params[i])][m] for m in range(chunks) for i in used]
            with chunk_gradient_pass():
                grads = torch.autograd.grad(loss, views, create_graph=differentiable,
                                            retain_graph=differentiable or keep_graph, allow_unused=True) if views else ()
        # A parameter the forward never reached gets zeros, as in the per-chunk execution.
        self.chunk_grads = []
        by_view = iter(grads)
        for _ in range(chunks):
            grads_m: list[Tensor | None] = [None] * len(params)
            for i in used:
                grads_m[i] = next(by_view)
            self.chunk_grads.append([g if g is not None else torch.zeros_like(p) for g, p in zip(grads_m, params)])

    def hessian_vector_sum(self, geometry, params, joint_weight=None):
        chunk_grads, self.chunk_grads = self.chunk_grads, []
        # The directions overwrite the chunk gradients' values (no c x P allocation); graphs are unaffected.
        directions, factor = geometry.all_directions()
        linked = [(g, v) for grads, dirs in zip(chunk_grads, directions) for g, v in zip(grads, dirs) if g.requires_grad]
        del chunk_grads, directions
        joint_parts, self.joint_parts = self.joint_parts, []
        if joint_weight is not None and joint_parts and joint_parts[0].requires_grad:
            if factor == 0.0:  # every direction is zero: only the joint loss has a gradient
                linked, factor = [], 1.0
            # The common factor scales the whole result at the end, so the joint term enters divided by it.
            linked.append((joint_parts[0], joint_weight / factor))
        if not linked:
            return [None] * len(params)
        result = list(
            torch.autograd.grad([g for g, _ in linked], params, grad_outputs=[v for _, v in linked], allow_unused=True)
        )
        del linked
        present = [r for r in result if r is not None]
        if factor != 1.0 and present:
            torch._foreach_mul_(present, factor)
        return result


class _FiniteDifferenceGraphs(_ChunkGraphs):
    """Chunk gradients without graphs (from a first pass of either execution); the backward differences each
    chunk's gradient along its direction, one forward and backward of the chunk at shifted weights."""

    def __init__(self, first: _ChunkGraphs, model, inputs, targets, chunks: int, criterion: Criterion, scale: float,
                 patterns: list[finite_difference.ReluPattern]):
        self.chunk_grads, self.joint_parts = first.chunk_grads, first.joint_parts
        self.patterns = patterns
        self.rng_states = first.rng_states or [None] * chunks
        self.model, self.criterion, self.scale = model, criterion, scale
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.batches = list(zip(inputs.chunk(chunks), targets.chunk(chunks)))

    def hessian_vector_sum(self, geometry, params, joint_weight=None):
        result: list[Tensor | None] = [None] * len(params)
        param_norm = finite_difference.norm(params)
        for m, (x, y) in enumerate(self.batches):
            grads, self.chunk_grads[m] = self.chunk_grads[m], None
            direction = geometry.direction(m)
            eps = finite_difference.step_size(param_norm, finite_difference.norm(direction), params[0].dtype,
                                              self.scale)
            if eps == 0.0:  # a zero direction: H_m v_m = 0
                continue
            shifted = finite_difference.shifted_gradient(self.model, self.names, params, direction, eps, x, y,
                                                         self.criterion, self.rng_states[m], self.patterns[m])
            torch._foreach_sub_(shifted, grads)
            torch._foreach_div_(shifted, eps)
            _accumulate(result, shifted)
            del grads, direction, shifted
        parts, self.joint_parts = self.joint_parts, []
        linked = [part for part in parts if part is not None and part.requires_grad]
        if joint_weight is not None and linked:
            joint = torch.autograd.grad(linked, params, grad_outputs=[joint_weight] * len(linked), allow_unused=True)
            _accumulate(result, joint)
        return result


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b)]).sum()


def _sq_norm(a: Sequence[Tensor]) -> Tensor:
    return torch.stack(torch._foreach_norm(a)).square().sum()


def _pair_cosines(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine matrix and the strictly-upper-triangle mask of a Gram matrix."""
    norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(_NORM_EPS)
    cos = gram / (norms[:, None] * norms[None, :])
    upper = torch.ones_like(gram, dtype=torch.bool).triu(1)
    return cos, upper


class _Geometry:
    """Loss value, statistics and ``v_m = dL/dg_m`` for the chunks of this process."""

    value: Tensor
    stats: GCStats | None
    pairs: int  # C(c, 2)

    def start_backward(self, grad_output: Tensor) -> None:
        """Fix the incoming gradient before the first :meth:`direction`."""

    def direction(self, local_index: int) -> list[Tensor]:
        raise NotImplementedError

    def all_directions(self) -> tuple[list[list[Tensor]], float]:
        """Every local chunk's direction, up to one common factor: ``(d, f)`` with ``v_m = f * d_m``.

        May overwrite the chunk gradients it was built from (and then :meth:`direction` is unusable)."""
        raise NotImplementedError


class _CollisionGeometry(_Geometry):
    """GC.  Works on per-parameter lists with foreach ops: no c x P matrix and no Gram matrix.

    The pair sum is accumulated as sum_n g_n . (g_1 + ... + g_{n-1}) while G is summed, which
    is exact within a process (no cancellation of |G|^2 - sum |g_m|^2); across ranks only the
    rank-level cross terms come from (|G|^2 - sum_r |G_r|^2) / 2.
    """

    def __init__(self, values: list[list[Tensor]], world: int, group: dist.ProcessGroup | None, with_stats: bool):
        self.values = values
        local_chunks = len(values)
        if local_chunks == 1:
            # A copy: G is scaled in place in the backward while g_1 is still needed.
            local_sum = [g.clone() for g in values[0]]
            local_pair_sum = local_sum[0].new_zeros(())
        else:
            local_pair_sum = _dot(values[0], values[1])
            local_sum = torch._foreach_add(values[0], values[1])
        for grads in values[2:]:
            local_pair_sum = local_pair_sum + _dot(local_sum, grads)
            torch._foreach_add_(local_sum, grads)
        cos_sum = local_pair_sum.new_zeros(())
        if with_stats:
            # Same prefix trick on the unit vectors g_m / |g_m|.
            unit_sum = None
            for grads in values:
                unit = torch._foreach_div(grads, torch.sqrt(_sq_norm(grads)).clamp_min(_NORM_EPS))
                if unit_sum is None:
                    unit_sum = unit
                else:
                    cos_sum = cos_sum + _dot(unit_sum, unit)
                    torch._foreach_add_(unit_sum, unit)
        local_pairs = float(math.comb(local_chunks, 2))

        if world > 1:
            local_sq = _sq_norm(local_sum)
            scalars = torch.stack(
                [local_pair_sum, local_sq, cos_sum, cos_sum.new_tensor(local_chunks), cos_sum.new_tensor(local_pairs)]
            )
            self.total, scalars = flat_collectives.all_reduce_sum(local_sum, scalars, group)
            within_ranks, rank_sq_sum, cos_sum, total_chunks, n_pairs = scalars.unbind()
            chunks = round(total_chunks.item())
            if chunks != local_chunks * world:
                raise ValueError(
                    f"gradient collision needs the same chunks on every rank; got {chunks} chunks "
                    f"in total on {world} ranks with chunks={local_chunks} here"
                )
            total_sq = _sq_norm(self.total)
            pair_sum = within_ranks + (total_sq - rank_sq_sum) / 2
        else:
            chunks = local_chunks
            self.total = local_sum
            pair_sum = local_pair_sum
            n_pairs = cos_sum.new_tensor(local_pairs)
            total_sq = None  # one process needs |G|^2 only for the statistics

        self.pairs = math.comb(chunks, 2)
        self.value = pair_sum / self.pairs
        self.stats = None
        if with_stats:
            if total_sq is None:
                total_sq = _sq_norm(self.total)
            nan = cos_sum.new_tensor(float("nan"))
            mean_cos = torch.where(n_pairs > 0, cos_sum / n_pairs.clamp_min(1), nan)
            self.stats = GCStats(total_sq, total_sq - 2 * pair_sum, mean_cos, chunks)

    def start_backward(self, grad_output: Tensor) -> None:
        self.scale = grad_output.item() / self.pairs
        self.total_scaled = False

    def direction(self, local_index: int) -> list[Tensor]:
        # v_m = s (G - g_m): G is scaled once, in place, so each direction is a single fused pass.
        if not self.total_scaled:
            torch._foreach_mul_(self.total, self.scale)
            self.total_scaled = True
        return torch._foreach_add(self.total, self.values[local_index], alpha=-self.scale)

    def all_directions(self) -> tuple[list[list[Tensor]], float]:
        # v_m = -s (g_m - G): one in-place pass per chunk, the factor -s applied once to the summed result.
        for grads in self.values:
            torch._foreach_sub_(grads, self.total)
        return self.values, -self.scale


class _CosineGeometry(_Geometry):
    """NGC.  Needs the c x c Gram matrix, so it works on a c x P matrix of the chunk gradients
    (all-gathered across ranks); its statistics come free with the Gram matrix, whatever
    ``with_stats`` says.  Every rank must pass the same ``chunks``."""

    def __init__(self, values: list[list[Tensor]], world: int, group: dist.ProcessGroup | None, with_stats: bool):
        self.shapes = [g.shape for g in values[0]]
        local = torch.stack([torch.cat([g.reshape(-1) for g in grads]) for grads in values])
        self.all_chunks = flat_collectives.all_gather_rows(local, group) if world > 1 else local
        self.local_chunks = len(values)
        self.first_local = (dist.get_rank(group) if world > 1 else 0) * len(values)
        gram = self.all_chunks @ self.all_chunks.T
        chunks = gram.shape[0]
        self.pairs = math.comb(chunks, 2)
        cos, upper = _pair_cosines(gram)
        self.value = cos[upper].sum() / self.pairs

        # dL/dg_m = sum_n A_mn g_n: off-diagonal 1/(C |g_m||g_n|), diagonal -(sum_{n!=m} cos_mn)/(C |g_m|^2).
        norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(_NORM_EPS)
        coefficients = 1.0 / (norms[:, None] * norms[None, :])
        off_diagonal_cos = cos.sum(1) - cos.diagonal()
        coefficients.diagonal().copy_(-off_diagonal_cos / norms.square())
        self.coefficients = coefficients / self.pairs
        self.stats = GCStats(
            gram.sum().detach(), gram.trace().detach(), cos[upper].mean().detach(), chunks
        )

    def start_backward(self, grad_output: Tensor) -> None:
        self.coefficients = self.coefficients * grad_output

    def direction(self, local_index: int) -> list[Tensor]:
        row = self.coefficients[self.first_local + local_index]
        flat = row @ self.all_chunks
        return [piece.view(shape) for piece, shape in zip(flat.split([math.prod(s) for s in self.shapes]), self.shapes)]

    def all_directions(self) -> tuple[list[list[Tensor]], float]:
        return [self.direction(m) for m in range(self.local_chunks)], 1.0


class _BackwardState:
    """What the outer backward needs; dropped (with the chunk graphs) once it has run."""

    def __init__(self, graphs: _ChunkGraphs, geometry: _Geometry, params, world: int, group, reduce_gradient: bool):
        self.graphs = graphs
        self.geometry = geometry
        self.params = params
        self.world = world
        self.group = group
        self.reduce_gradient = reduce_gradient


def _collision_backward(ctx, grad_output: Tensor, grad_joint: Tensor | None) -> tuple[Tensor | None, ...]:
    state: _BackwardState | None = ctx.state
    if state is None:
        raise RuntimeError("a gradient-collision loss supports one backward; compute the loss again for another")
    ctx.state = None
    params = state.params
    # Left to a gradient-averaging engine, each rank's share is scaled by world_size up front (in the
    # directions, so no extra pass over the result).
    state.geometry.start_backward(grad_output if state.reduce_gradient else grad_output * state.world)
    if grad_joint is not None and state.world > 1 and state.reduce_gradient:
        grad_joint = grad_joint / state.world  # the sum over ranks below then averages the per-rank joint loss
    result = state.graphs.hessian_vector_sum(state.geometry, params, grad_joint)
    result = [r if r is not None else torch.zeros_like(p) for r, p in zip(result, params)]
    if state.world > 1 and state.reduce_gradient:
        result = flat_collectives.all_reduce_sum(result, None, state.group)[0]
    return (None, *result)


class _CollisionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, state: _BackwardState, *params: Tensor) -> Tensor:
        ctx.state = state
        return state.geometry.value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        return _collision_backward(ctx, grad_output, None)


class _CollisionWithJointFunction(torch.autograd.Function):
    """(GC, joint loss): one backward serves both."""

    @staticmethod
    def forward(ctx, state: _BackwardState, *params: Tensor) -> tuple[Tensor, Tensor]:
        ctx.state = state
        return state.geometry.value.clone(), state.graphs.joint_value()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor, grad_joint: Tensor):
        return _collision_backward(ctx, grad_output, grad_joint)


def _accumulate(result: list[Tensor | None], contributions: Sequence[Tensor | None]) -> None:
    """Add per-parameter contributions into ``result``, adopting the first one of each (no zeros pass)."""
    adopted = {r.data_ptr() for r in result if r is not None}
    targets, updates = [], []
    for i, h in enumerate(contributions):
        if h is None:
            continue
        if result[i] is None:
            # The engine may hand one tensor to several inputs; adopt each storage only once.
            result[i] = h if h.data_ptr() not in adopted else h.clone()
            adopted.add(result[i].data_ptr())
        else:
            targets.append(result[i])
            updates.append(h)
    if targets:
        torch._foreach_add_(targets, updates)
