"""The fused disposal step: SRC-KD read off the gradient-collision step's own forward and differentiated in its
backward. Its gradient equals the slow obvious float64 objective (each chunk forwarded alone, explicit pair sum,
SRC-KD averaged over the chunks) in both GC executions, under both KD heads, GC and NGC; without batch norm it
equals the unfused step exactly."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from trd.losses import distillation_loss, frozen_teacher, gradient_collision_loss
from trd.losses.disposal_step import DisposalStep
from trd.losses.gradient_collision import JointTerm, collision_with_joint_loss
from trd.models import build_model
from trd.models.source_view import WithSourceHead

LAM, TEMPERATURE = 0.3, 2.0


def _module(arch: str = "cnn", batchnorm: bool = True) -> WithSourceHead:
    torch.manual_seed(0)
    options = {"width": 4, "batchnorm": batchnorm} if arch == "cnn" else {"depth": 1, "width": 8, "heads": 2, "patch": 4}
    model = build_model(arch, num_classes=3, image_size=8, **options)
    module = WithSourceHead(model, torch.nn.Linear(model.feature_dim, 5)).double()
    return module.train()


def _teacher(module: WithSourceHead) -> WithSourceHead:
    teacher = frozen_teacher(module)
    with torch.no_grad():  # the student moved away from the teacher, so the KD gradient is not zero
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher


def _batch(n: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (n,), generator=g)


def _view(module, kd_head):
    return module.source if kd_head == "source" else module


def reference_gradient(module, teacher, x, y, chunks, kd_head, normalized):
    """(1 - lam) mean_m KD(chunk m alone) + lam * mean over pairs of g_m . g_n (or cosines), by autograd."""
    params = [p for p in module.parameters() if p.requires_grad]
    flats, kd = [], 0
    for xm, ym in zip(x.chunk(chunks), y.chunk(chunks)):
        grads = torch.autograd.grad(F.cross_entropy(module.source(xm), ym), params, create_graph=True,
                                    materialize_grads=True)
        flats.append(torch.cat([g.reshape(-1) for g in grads]))
        with torch.no_grad():
            teacher_logits = _view(teacher, kd_head)(xm)
        kd = kd + distillation_loss(_view(module, kd_head)(xm), teacher_logits, TEMPERATURE) / chunks
    pairs = [(m, n) for m in range(chunks) for n in range(m + 1, chunks)]
    if normalized:
        gc = sum(F.cosine_similarity(flats[m], flats[n], dim=0) for m, n in pairs)
    else:
        gc = sum(flats[m].dot(flats[n]) for m, n in pairs)
    loss = (1 - LAM) * kd + LAM * gc / math.comb(chunks, 2)
    return torch.autograd.grad(loss, params, materialize_grads=True)


def _step_gradient(module, teacher, x, y, cfg):
    module.zero_grad(set_to_none=True)
    loss, scalars = DisposalStep(cfg, teacher, None, seed=0)(SimpleNamespace(module=module), x, y, 0)
    loss.backward()
    return [p.grad.clone() for p in module.parameters()], scalars


@pytest.mark.parametrize("arch", ["cnn", "vit"])  # batched and per-chunk executions
@pytest.mark.parametrize("kd_head", ["source", "target"])
@pytest.mark.parametrize("method", ["gc", "ngc"])
def test_fused_step_equals_the_float64_reference(arch, kd_head, method):
    module = _module(arch)
    teacher = _teacher(module)
    x, y = _batch()
    cfg = {"method": method, "retain": "src-kd", "lam": LAM, "temperature": TEMPERATURE, "chunks": 4,
           "kd_head": kd_head}
    expected = reference_gradient(_module_like(module), teacher, x, y, 4, kd_head, method == "ngc")
    grads, scalars = _step_gradient(module, teacher, x, y, cfg)
    for name_grad, (name, _), want in zip(grads, module.named_parameters(), expected):
        torch.testing.assert_close(name_grad, want, rtol=1e-7, atol=1e-10, msg=f"{arch} {kd_head} {method}: {name}")
    assert scalars["retain"] > 0


def _module_like(module: WithSourceHead) -> WithSourceHead:
    """A copy with the same weights and batch-norm state, so both sides start from the same running statistics."""
    return copy.deepcopy(module)


def test_fused_step_without_batch_norm_equals_the_unfused_step():
    module = _module("cnn", batchnorm=False)
    teacher = _teacher(module)
    x, y = _batch()
    for kd_head in ("source", "target"):
        for chunking in ("random", "class"):
            cfg = {"method": "gc", "retain": "src-kd", "lam": LAM, "temperature": TEMPERATURE, "chunks": 4,
                   "kd_head": kd_head, "chunking": chunking}
            fused, fused_scalars = _step_gradient(module, teacher, x, y, {**cfg, "fused": True})
            unfused, unfused_scalars = _step_gradient(module, teacher, x, y, {**cfg, "fused": False})
            for a, b in zip(fused, unfused):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
            assert fused_scalars["retain"] == pytest.approx(unfused_scalars["retain"], rel=1e-9)
            assert any(g.abs().sum() > 0 for g in fused)


@pytest.mark.parametrize("execution", ["batched", "per_chunk"])
def test_a_joint_loss_alone_gets_its_plain_gradient(execution):
    """With GC's weight zero (the backward's common factor is zero), the joint loss still gets its gradient."""
    module = _module("cnn", batchnorm=False)
    x, y = _batch()
    target = torch.randn(8, 5, dtype=torch.float64)
    joint = JointTerm(lambda logits, rows: (logits - target[rows]).square().mean())
    gc, joint_loss, _ = collision_with_joint_loss(module.source, x, y, 2, joint, execution=execution)
    (0 * gc + joint_loss).backward()
    params = list(module.source.parameters())
    expected = torch.autograd.grad((module.source(x) - target).square().mean(), params, materialize_grads=True)
    for p, want in zip(params, expected):
        torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-12)


def test_a_collision_loss_with_a_joint_term_has_gc_s_value_and_one_backward():
    module = _module("cnn")
    x, y = _batch()
    joint = JointTerm(lambda logits, rows: logits.square().mean())
    gc, joint_loss, stats = collision_with_joint_loss(_module_like(module).source, x, y, 4, joint, return_stats=True)
    assert gc.item() == pytest.approx(gradient_collision_loss(_module_like(module).source, x, y, 4).item(), rel=1e-9)
    assert stats is not None and joint_loss.requires_grad
    (gc + joint_loss).backward()
    with pytest.raises(RuntimeError, match="one backward"):
        joint_loss.backward()
