"""trd.meta's meta-gradients against float64 references built the slow obvious way: an MLP written as raw
tensors, its inner loop unrolled by hand with each optimiser's update rule written out, differentiated by
autograd; and, independently of autograd's double backward, central finite differences of the whole
adapt-then-score function."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trd.meta.inner import InnerOptimizer, adapt
from trd.meta.maml import Task, maml_objective, meta_gradient, meta_loss


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _tasks() -> list[Task]:
    g = torch.Generator().manual_seed(1)
    batch = lambda n: (torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
    return [Task(batch(6), batch(4), 1.0), Task(batch(6), batch(4), -0.5)]


def _reference_forward(w, x):
    return torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3]


def _reference_objective(weights, tasks, steps, opt, second_order=True):
    """The same objective with every update written out (torch.optim's formulas)."""
    total = 0.0
    for task in tasks:
        w = list(weights)
        m = [torch.zeros_like(p) for p in w]
        v = [torch.zeros_like(p) for p in w]
        for t in range(1, steps + 1):
            loss = F.cross_entropy(_reference_forward(w, task.support[0]), task.support[1])
            g = list(torch.autograd.grad(loss, w, create_graph=second_order))
            if not second_order:
                g = [x.detach() for x in g]
            if opt.name == "sgd":
                w = [p - opt.lr * gi for p, gi in zip(w, g)]
            elif opt.name == "momentum":
                m = [gi if t == 1 else opt.momentum * mi + gi for mi, gi in zip(m, g)]
                w = [p - opt.lr * mi for p, mi in zip(w, m)]
            else:
                b1, b2 = opt.betas
                m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
                v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
                w = [p - opt.lr * (mi / (1 - b1 ** t)) / (torch.sqrt(vi / (1 - b2 ** t)) + opt.eps)
                     for p, mi, vi in zip(w, m, v)]
        total = total + task.weight * F.cross_entropy(_reference_forward(w, task.query[0]), task.query[1])
    return total / len(tasks)


def _leaves(model):
    return [p.detach().clone().requires_grad_(True) for p in model.parameters()]


OPTIMIZERS = [InnerOptimizer("sgd", lr=0.3), InnerOptimizer("momentum", lr=0.2, momentum=0.9),
              InnerOptimizer("adam", lr=0.05)]


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name)
def test_second_order_meta_gradient_equals_the_unrolled_float64_reference(steps, opt):
    model, tasks = _mlp(), _tasks()
    objective, grads = meta_gradient(model, tasks, steps, opt)
    weights = _leaves(model)
    reference = _reference_objective(weights, tasks, steps, opt)
    expected = torch.autograd.grad(reference, weights)
    assert objective.item() == pytest.approx(reference.item(), rel=1e-12)
    for got, want in zip(grads.values(), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name)
def test_second_order_meta_gradient_equals_central_finite_differences(opt):
    model, tasks = _mlp(), _tasks()
    _, grads = meta_gradient(model, tasks, 2, opt)
    names = [n for n, _ in model.named_parameters()]
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    h = 1e-6
    g = torch.Generator().manual_seed(2)
    for name in names:
        flat = base[name].view(-1)
        for i in torch.randint(0, flat.numel(), (3,), generator=g).tolist():
            values = []
            for sign in (1, -1):
                moved = {n: p.clone() for n, p in base.items()}
                moved[name].view(-1)[i] += sign * h
                with torch.enable_grad():
                    params = {n: p.requires_grad_(True) for n, p in moved.items()}
                    values.append(maml_objective(model, params, tasks, 2, opt).item())
            numeric = (values[0] - values[1]) / (2 * h)
            assert grads[name].view(-1)[i].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name)
def test_first_order_option_is_the_query_gradient_at_the_adapted_parameters(opt):
    model, tasks = _mlp(), _tasks()
    _, grads = meta_gradient(model, tasks, 3, opt, second_order=False)
    weights = _leaves(model)
    expected = torch.autograd.grad(_reference_objective(weights, tasks, 3, opt, second_order=False), weights)
    for got, want in zip(grads.values(), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # By definition: sum over tasks of weight * grad of the query loss at that task's adapted parameters.
    definition = [torch.zeros_like(p) for p in model.parameters()]
    params = dict(model.named_parameters())
    for task in tasks:
        adapted = adapt(params, lambda p, _: F.cross_entropy(torch.func.functional_call(model, p, task.support[0]),
                                                             task.support[1]), 3, opt, second_order=False)
        leaves = {n: p.detach().requires_grad_(True) for n, p in adapted.items()}
        q = F.cross_entropy(torch.func.functional_call(model, leaves, task.query[0]), task.query[1])
        for d, gq in zip(definition, torch.autograd.grad(q, list(leaves.values()))):
            d += task.weight * gq / len(tasks)
    for got, want in zip(grads.values(), definition):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_adam_through_a_zero_gradient_entry_stays_finite():
    # A unit whose inputs are all zero has a zero weight gradient: Adam's second moment is exactly 0 there.
    model, tasks = _mlp(), _tasks()
    zeroed = [Task((task.support[0].clone(), task.support[1]), task.query, task.weight) for task in tasks]
    for task in zeroed:
        task.support[0][:, 0] = 0.0
    _, grads = meta_gradient(model, zeroed, 2, InnerOptimizer("adam", lr=0.05))
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_batchnorm_uses_batch_statistics_and_keeps_running_ones():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).double()
    model(torch.randn(2, 3, 6, 6, dtype=torch.float64))
    before = {n: b.clone() for n, b in model.named_buffers()}
    g = torch.Generator().manual_seed(3)
    batch = lambda: (torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 2, (4,), generator=g))
    _, grads = meta_gradient(model, [Task(batch(), batch())], 2, InnerOptimizer("sgd", lr=0.1))
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())
    assert all(torch.isfinite(x).all() and x.abs().sum() > 0 for x in grads.values())


def test_an_inner_loop_needs_a_step_and_a_known_optimiser():
    with pytest.raises(ValueError, match="at least one step"):
        adapt({}, lambda p, t: torch.zeros(()), 0, InnerOptimizer())
    with pytest.raises(ValueError, match="not one of sgd, momentum, adam"):
        InnerOptimizer("lamb")


def test_meta_loss_backward_fires_each_parameter_hook_once_with_the_meta_gradient():
    # DeepSpeed ZeRO partitions gradients in hooks on the parameters: an inner step must not trigger them.
    model, tasks = _mlp(), _tasks()
    opt = InnerOptimizer("adam", lr=0.05)
    _, expected = meta_gradient(model, tasks, 2, opt)
    calls = {n: 0 for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        p.register_hook(lambda g, name=name: calls.__setitem__(name, calls[name] + 1))
    meta_loss(model, tasks, 2, opt).backward()
    assert set(calls.values()) == {1}
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-12, atol=1e-14)
