"""The Reverse-MAML loss against a float64 reference with every inner update written out: a raw-tensor MLP,
the beneficial task adapted through the model's own head, the malicious one through a new head that starts
at zero, the ascended term capped."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trd.meta.inner import InnerOptimizer
from trd.meta.reverse_maml import ReverseMamlWeights, halves, reverse_maml_loss


class Tiny(nn.Module):
    feature_dim = 6

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def features(self, x):
        return torch.tanh(self.body(x))

    def forward(self, x):
        return self.head(self.features(x))


def _model():
    torch.manual_seed(0)
    return Tiny().double()


def _batches():
    g = torch.Generator().manual_seed(1)
    good = (torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
    bad = (torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (8,), generator=g))
    return good, bad


def _adapted_score(w, support, query, steps, opt, linear=False):
    """Cross-entropy on query after `steps` updates of opt on support; w = [body W, body b, head W, head b];
    linear: the body is not updated."""
    params0 = list(w)
    forward = lambda w, x: torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3]  # noqa: E731
    m = [torch.zeros_like(p) for p in w]
    v = [torch.zeros_like(p) for p in w]
    for t in range(1, steps + 1):
        g = list(torch.autograd.grad(F.cross_entropy(forward(w, support[0]), support[1]), w, create_graph=True))
        if linear:
            g[0], g[1] = torch.zeros_like(g[0]), torch.zeros_like(g[1])
        if opt.name == "sgd":
            w = [p - opt.lr * gi for p, gi in zip(w, g)]
        else:
            b1, b2 = opt.betas
            m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
            v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
            w = [p - opt.lr * (mi / (1 - b1 ** t)) / (torch.sqrt(vi / (1 - b2 ** t) + 1e-300) + opt.eps)
                 for p, mi, vi in zip(w, m, v)]
            if linear:
                w[0], w[1] = params0[0], params0[1]
    return F.cross_entropy(forward(w, query[0]), query[1])


def _reference(params, good, bad, steps, opt, weights, cap, linear=False):
    body_w, body_b, head_w, head_b = params
    retain = F.cross_entropy(torch.tanh(good[0] @ body_w.T + body_b) @ head_w.T + head_b, good[1])
    good_score = _adapted_score(list(params), *halves(good), steps, opt, linear)
    zero_head = [torch.zeros(2, 6, dtype=torch.float64, requires_grad=True),
                 torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    bad_score = _adapted_score([body_w, body_b, *zero_head], *halves(bad), steps, opt, linear)
    return weights.retain * retain + weights.good * good_score - weights.bad * torch.clamp(bad_score, max=cap)


@pytest.mark.parametrize("attacker", ["full", "linear"])
@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("opt", [InnerOptimizer("sgd", lr=0.5), InnerOptimizer("adam", lr=0.05)], ids=lambda o: o.name)
def test_reverse_maml_loss_and_meta_gradient_equal_the_unrolled_reference(steps, opt, attacker):
    model, (good, bad) = _model(), _batches()
    weights = ReverseMamlWeights(retain=0.7, good=1.3, bad=0.9, cap=10.0)
    loss, parts = reverse_maml_loss(model, good, bad, 2, steps, opt, weights, attacker=attacker)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    leaves = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    want = _reference(leaves, good, bad, steps, opt, weights, cap=10.0, linear=attacker == "linear")
    expected = torch.autograd.grad(want, leaves)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    for got, ref in zip(grads, expected):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    assert set(parts) == {"meta/retain", "meta/good", "meta/bad"}


def test_past_the_cap_the_malicious_term_gives_no_gradient():
    model, (good, bad) = _model(), _batches()
    opt = InnerOptimizer("sgd", lr=0.5)
    only_bad = ReverseMamlWeights(retain=0.0, good=0.0, bad=1.0, cap=1e-3)
    loss, parts = reverse_maml_loss(model, good, bad, 2, 1, opt, only_bad)
    assert parts["meta/bad"] > 1e-3 and loss.item() == pytest.approx(-1e-3)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True, materialize_grads=True)
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_the_default_cap_is_twice_a_uniform_guess():
    model, (good, bad) = _model(), _batches()
    loss, parts = reverse_maml_loss(model, good, bad, 2, 1, InnerOptimizer("sgd", lr=0.5),
                                    ReverseMamlWeights(retain=0.0, good=0.0, bad=1.0))
    assert loss.item() == pytest.approx(-min(parts["meta/bad"], 2 * torch.log(torch.tensor(2.0)).item()))


def test_first_order_drops_the_inner_second_derivatives():
    model, (good, bad) = _model(), _batches()
    opt = InnerOptimizer("sgd", lr=0.5)
    first, _ = reverse_maml_loss(model, good, bad, 2, 2, opt, second_order=False)
    second, _ = reverse_maml_loss(model, good, bad, 2, 2, opt, second_order=True)
    assert first.item() == pytest.approx(second.item(), rel=1e-12)  # same value, different gradient
    g1 = torch.autograd.grad(first, list(model.parameters()))
    g2 = torch.autograd.grad(second, list(model.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(g1, g2))


def test_a_task_needs_a_support_and_a_query_image():
    with pytest.raises(ValueError, match="at least 2 images"):
        halves((torch.zeros(1, 4), torch.zeros(1)))
