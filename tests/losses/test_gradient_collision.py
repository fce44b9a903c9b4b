import copy

import pytest
import torch
import torch.nn.functional as F
from gc_reference import TinyAttention, bn_cnn, mlp, naive_collision, wide_cnn
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from trd.losses import dtl_objective, gradient_collision_loss
from trd.losses.conv_double_backward import DeferredWeightGradients

TIGHT = dict(rtol=1e-9, atol=1e-12)


def batch_for(model_name, size=12, classes=3):
    generator = torch.Generator().manual_seed(1)
    shape = {"mlp": (size, 6), "bn_cnn": (size, 2, 5, 5), "wide_cnn": (size, 2, 4, 4), "attention": (size, 5, 4)}[model_name]
    inputs = torch.randn(*shape, generator=generator, dtype=torch.float64)
    targets = torch.randint(classes, (size,), generator=generator)
    return inputs, targets


def build(model_name):
    if model_name == "attention":
        torch.manual_seed(0)
        return TinyAttention().double()
    return {"mlp": mlp, "bn_cnn": bn_cnn, "wide_cnn": wide_cnn}[model_name]()


EXECUTIONS = ["batched", "per_chunk"]


def ours(model, inputs, targets, chunks, normalized, execution="auto"):
    model.zero_grad(set_to_none=True)
    loss, stats = gradient_collision_loss(
        model, inputs, targets, chunks=chunks, normalized=normalized, return_stats=True, execution=execution
    )
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad], stats


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("normalized", [False, True], ids=["gc", "ngc"])
@pytest.mark.parametrize("chunks", [2, 3, 4])
@pytest.mark.parametrize("model_name", ["mlp", "bn_cnn", "wide_cnn"])
def test_value_and_gradient_match_naive_all_pairs_reference(model_name, chunks, normalized, execution):
    model = build(model_name)
    reference = copy.deepcopy(model)
    inputs, targets = batch_for(model_name)

    loss, grads, stats = ours(model, inputs, targets, chunks, normalized, execution)
    ref_loss, ref_grads, ref_stats = naive_collision(reference, inputs, targets, chunks, normalized)

    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TIGHT)
    assert stats.chunks == chunks
    torch.testing.assert_close(stats.total_sq_norm, ref_stats["total_sq_norm"], **TIGHT)
    torch.testing.assert_close(stats.sum_chunk_sq_norms, ref_stats["sum_chunk_sq_norms"], **TIGHT)
    torch.testing.assert_close(stats.mean_pair_cosine, ref_stats["mean_pair_cosine"], **TIGHT)
    assert any(g.abs().max() > 1e-6 for g in grads)


@pytest.mark.parametrize("normalized", [False, True], ids=["gc", "ngc"])
@pytest.mark.parametrize("chunks", [2, 4])
def test_deferred_conv_weight_terms_give_the_same_gradient(monkeypatch, chunks, normalized):
    deferred = []
    original_add = DeferredWeightGradients.add

    def spying_add(self, weight, x, dy, geometry):
        deferred.append(weight.shape)
        original_add(self, weight, x, dy, geometry)

    monkeypatch.setattr(DeferredWeightGradients, "add", spying_add)
    model = wide_cnn()
    reference = copy.deepcopy(model)
    inputs, targets = batch_for("wide_cnn")
    loss, grads, _ = ours(model, inputs, targets, chunks, normalized, "per_chunk")
    ref_loss, ref_grads, _ = naive_collision(reference, inputs, targets, chunks, normalized)
    # Two terms per chunk for the 16x16x3x3 weight: its double-backward node and its forward conv.
    assert deferred.count(torch.Size([16, 16, 3, 3])) == 2 * chunks
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_batchnorm_running_stats_see_one_update_per_chunk_forward(execution):
    model = bn_cnn()
    sequential = copy.deepcopy(model)
    inputs, targets = batch_for("bn_cnn")
    gradient_collision_loss(model, inputs, targets, chunks=3, execution=execution).backward()
    with torch.no_grad():
        for chunk in inputs.chunk(3):
            sequential(chunk)
    for (name, got), want in zip(model.named_buffers(), sequential.buffers()):
        torch.testing.assert_close(got, want, **TIGHT, msg=name)


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_gradient_is_O_c_hessian_vector_products(monkeypatch, execution):
    """Per chunk: c autograd.grad calls for the chunk gradients and c for the HVPs, never one per pair;
    batched: one of each."""
    calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(kwargs.get("create_graph", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    model = mlp()
    inputs, targets = batch_for("mlp", size=16)
    for normalized in (False, True):
        calls.clear()
        gradient_collision_loss(model, inputs, targets, chunks=8, normalized=normalized, execution=execution).backward()
        assert calls == ([True] * 8 + [False] * 8 if execution == "per_chunk" else [True, False])


class WithSpareLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = mlp()
        self.spare = nn.Linear(2, 2).double()

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_frozen_parameters_are_excluded_and_unused_ones_get_zeros(execution):
    model = WithSpareLayer()
    frozen = model.body[0].weight.requires_grad_(False)
    inputs, targets = batch_for("mlp")
    gradient_collision_loss(model, inputs, targets, chunks=2, execution=execution).backward()
    assert frozen.grad is None
    assert torch.equal(model.spare.weight.grad, torch.zeros_like(model.spare.weight))
    assert model.body[2].weight.grad.abs().max() > 0


def test_backward_accumulates_into_existing_grad_like_any_loss():
    model = mlp()
    inputs, targets = batch_for("mlp")
    _, once, _ = ours(model, inputs, targets, 2, False)
    gradient_collision_loss(model, inputs, targets, chunks=2).backward()
    for p, g in zip(model.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g, **TIGHT)


def test_second_backward_through_the_same_loss_is_a_clear_error():
    inputs, targets = batch_for("mlp")
    loss = gradient_collision_loss(mlp(), inputs, targets, chunks=2)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="supports one backward"):
        loss.backward()


def test_dtl_objective_with_gc_gives_weighted_sum_of_gradients():
    model = bn_cnn()
    reference = copy.deepcopy(model)
    inputs, targets = batch_for("bn_cnn")
    lam = 0.3
    retain_inputs = inputs.flip(0)

    model.zero_grad()
    retain = F.cross_entropy(model(retain_inputs), targets)
    dtl_objective(retain, gradient_collision_loss(model, inputs, targets, chunks=3), lam).backward()

    params = list(reference.parameters())
    retain_grads = torch.autograd.grad(F.cross_entropy(reference(retain_inputs), targets), params)
    _, gc_grads, _ = naive_collision(reference, inputs, targets, 3, normalized=False)
    for p, r, g in zip(model.parameters(), retain_grads, gc_grads):
        torch.testing.assert_close(p.grad, (1 - lam) * r + lam * g, **TIGHT)


def test_without_grad_mode_returns_the_value_without_a_graph():
    model = bn_cnn()
    reference = copy.deepcopy(model)
    inputs, targets = batch_for("bn_cnn")
    with torch.no_grad():
        loss = gradient_collision_loss(model, inputs, targets, chunks=4)
    assert not loss.requires_grad and loss.grad_fn is None
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(loss, naive_collision(reference, inputs, targets, 4, False)[0], **TIGHT)


@pytest.mark.parametrize("normalized", [False, True], ids=["gc", "ngc"])
def test_attention_with_scaled_dot_product_attention_has_a_double_backward(normalized):
    model = build("attention")
    reference = copy.deepcopy(model)
    inputs, targets = batch_for("attention", size=8)
    loss, grads, _ = ours(model, inputs, targets, 4, normalized)
    with sdpa_kernel([SDPBackend.MATH]):
        ref_loss, ref_grads, _ = naive_collision(reference, inputs, targets, 4, normalized)
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TIGHT)


def test_fewer_than_two_chunks_is_a_clear_error():
    inputs, targets = batch_for("mlp")
    with pytest.raises(ValueError, match=r"at least 2 chunks.*chunks=1.*pass chunks>=2"):
        gradient_collision_loss(mlp(), inputs, targets, chunks=1)


def test_batch_that_does_not_split_evenly_is_a_clear_error():
    inputs, targets = batch_for("mlp", size=10)
    with pytest.raises(ValueError, match=r"batch of 10 does not split into 3 equal chunks.*divisible"):
        gradient_collision_loss(mlp(), inputs, targets, chunks=3)


def test_model_without_trainable_parameters_is_a_clear_error():
    model = mlp().requires_grad_(False)
    inputs, targets = batch_for("mlp")
    with pytest.raises(ValueError, match="no parameter that requires grad"):
        gradient_collision_loss(model, inputs, targets, chunks=2)


def mixed_cnn() -> nn.Module:
    """Frozen conv, eval-mode batch norm with trainable affine, conv bias, a linear layer on a token axis."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, stride=2),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Flatten(2),
        nn.Linear(9, 5),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(20, 3),
    ).double()
    model[0].weight.requires_grad_(False)
    with torch.no_grad():
        model[4].running_mean.normal_(0, 0.5)
        model[4].running_var.uniform_(0.5, 2.0)
    model.train()
    model[4].eval()
    return model


@pytest.mark.parametrize("normalized", [False, True], ids=["gc", "ngc"])
def test_batched_execution_handles_frozen_and_eval_mode_layers(normalized):
    model = mixed_cnn()
    reference = copy.deepcopy(model)
    inputs, targets = batch_for("bn_cnn", size=12)
    loss, grads, _ = ours(model, inputs, targets, 3, normalized, "batched")
    ref_loss, ref_grads, _ = naive_collision(reference, inputs, targets, 3, normalized)
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TIGHT)
    for (name, got), want in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(got, want, **TIGHT, msg=name)


def test_auto_execution_forwards_attention_models_chunk_by_chunk(monkeypatch):
    calls = []
    original = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or original(*a, **k))
    inputs, targets = batch_for("attention", size=8)
    gradient_collision_loss(build("attention"), inputs, targets, chunks=4).backward()
    assert len(calls) == 8
    calls.clear()
    inputs, targets = batch_for("bn_cnn", size=8)
    gradient_collision_loss(bn_cnn(), inputs, targets, chunks=4).backward()
    assert len(calls) == 2


def test_batched_execution_of_an_unsupported_model_is_a_clear_error():
    inputs, targets = batch_for("attention", size=8)
    with pytest.raises(ValueError, match=r"execution='batched' needs .*use execution='per_chunk'"):
        gradient_collision_loss(build("attention"), inputs, targets, chunks=2, execution="batched")
    with pytest.raises(ValueError, match=r"execution='sideways' is not one of"):
        gradient_collision_loss(mlp(), *batch_for("mlp"), chunks=2, execution="sideways")


class TiedHead(nn.Module):
    """The output layer reuses the embedding's weight outside any nn.Linear call."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 6).double()

    def forward(self, x):
        return torch.tanh(self.embed(x)) @ self.embed.weight


def test_a_parameter_used_outside_the_chunked_layers_is_an_error_not_a_wrong_gradient():
    inputs, targets = batch_for("mlp")
    with pytest.raises(RuntimeError, match=r"computes with a trainable parameter.*execution='per_chunk'"):
        gradient_collision_loss(TiedHead(), inputs[:, :3], targets, chunks=2)
    model = TiedHead()
    loss, grads, _ = ours(model, inputs[:, :3], targets, 2, False, "per_chunk")
    ref_loss, ref_grads, _ = naive_collision(copy.deepcopy(model), inputs[:, :3], targets, 2, False)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TIGHT)
