"""The non-fine-tunable disposal's simulated attacker: its meta-gradient against a float64 finite-difference
reference of the whole unrolled objective, its first-order form, and the attacker distribution it samples."""
import contextlib
import math
from functools import partial

import pytest
import torch
from torch import nn

from trd.losses.double_backward_mode import fast_double_backward
from trd.losses.resistance import inverse_cross_entropy, negative_entropy, resistance_loss
from trd.meta.inner import InnerOptimizer
from trd.meta.simulated_attack import (
    AttackerDistribution,
    SimulatedAttacker,
    attacked_loss,
    prototype_head,
    sample_attacker,
)


class TinyBody(nn.Module):
    """A TrdModel in miniature: features (with BatchNorm, run on batch statistics) and a head that takes no part."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.head = nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 7)
        self.feature_dim = 4

    def features(self, x):
        return torch.tanh(self.bn(self.fc(x)))


def _setup(seed=0):
    torch.manual_seed(seed)
    body = TinyBody().double()
    support = [(torch.randn(6, 5, dtype=torch.float64), torch.randint(3, (6,))) for _ in range(3)]
    query = (torch.randn(8, 5, dtype=torch.float64), torch.randint(3, (8,)))
    return body, support, query


def _loss(body, attacker, support, query, kind="inverse-ce", params=None, fast=True):
    return attacked_loss(body, attacker, lambda t: support[t], query, 3, partial(resistance_loss, kind),
                         torch.Generator().manual_seed(7), params=params,
                         double_backward=fast_double_backward if fast else contextlib.nullcontext)[0]


def _finite_difference_gradient(body, attacker, support, query, kind, eps=1e-6):
    """Central differences of the unrolled objective, one parameter entry at a time: no second-order autograd."""
    grads = {}
    for name, p in body.named_parameters():
        if name.startswith("head."):
            continue
        g = torch.zeros_like(p)
        for i in range(p.numel()):
            flat = p.data.view(-1)
            keep = flat[i].item()
            flat[i] = keep + eps
            up = _loss(body, attacker, support, query, kind).item()
            flat[i] = keep - eps
            down = _loss(body, attacker, support, query, kind).item()
            flat[i] = keep
            g.view(-1)[i] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("mode", ["full", "linear"])
@pytest.mark.parametrize("optimizer, steps, kind", [(InnerOptimizer("sgd", lr=0.3), 1, "inverse-ce"),
                                                    (InnerOptimizer("momentum", lr=0.2), 2, "kl-uniform"),
                                                    (InnerOptimizer("adam", lr=0.05), 2, "neg-entropy")])
def test_second_order_meta_gradient_equals_the_float64_unrolled_reference(mode, optimizer, steps, kind):
    body, support, query = _setup()
    attacker = SimulatedAttacker(optimizer, steps, mode, second_order=True)
    params = {n: p for n, p in body.named_parameters() if not n.startswith("head.")}
    grads = torch.autograd.grad(_loss(body, attacker, support, query, kind, params=params), list(params.values()))
    reference = _finite_difference_gradient(body, attacker, support, query, kind)
    for (name, _), g in zip(params.items(), grads):
        torch.testing.assert_close(g, reference[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("mode", ["full", "linear"])
@pytest.mark.parametrize("second_order", [True, False])
def test_a_prototype_head_attacker_differentiates_through_its_class_means(mode, second_order):
    """With the head computed from the body's features, even the first-order step depends on the body through
    the head: the reference is the whole unrolled objective by central differences."""
    body, support, query = _setup(3)
    attacker = SimulatedAttacker(InnerOptimizer("momentum", lr=0.2), 2, mode, second_order, head="prototype")
    params = {n: p for n, p in body.named_parameters() if not n.startswith("head.")}
    grads = torch.autograd.grad(_loss(body, attacker, support, query, params=params), list(params.values()))
    if not second_order:  # first order: the inner gradients are constants, so central differences do not apply
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
        return
    reference = _finite_difference_gradient(body, attacker, support, query, "inverse-ce")
    for (name, _), g in zip(params.items(), grads):
        torch.testing.assert_close(g, reference[name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_prototype_head_is_the_nearest_class_mean_classifier():
    torch.manual_seed(0)
    features = torch.randn(30, 6, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,))  # class 4 of 5 has no image
    head = prototype_head(features, labels, 5)
    means = torch.stack([features[labels == c].mean(0) for c in range(4)])
    probes = torch.randn(50, 6, dtype=torch.float64)
    logits = probes @ head["head.weight"].T + head["head.bias"]
    assert torch.equal(logits.argmax(1), torch.cdist(probes, means).argmin(1))
    assert (logits.argmax(1) != 4).all()


def test_the_hand_written_double_backwards_give_pytorchs_meta_gradient_on_a_convolutional_body():
    from trd.models import build_model

    torch.manual_seed(0)
    body = build_model("cnn", num_classes=3, image_size=8, width=4).double()
    support = [(torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(3, (4,))) for _ in range(2)]
    query = (torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(3, (4,)))
    attacker = SimulatedAttacker(InnerOptimizer("momentum", lr=0.1), 2, "full", second_order=True)
    params = {n: p for n, p in body.named_parameters() if not n.startswith("head.")}
    fast, native = (torch.autograd.grad(_loss(body, attacker, support, query, params=params, fast=f),
                                        list(params.values())) for f in (True, False))
    for name, a, b in zip(params, fast, native):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


def test_first_order_takes_the_query_gradient_at_the_adapted_body():
    body, support, query = _setup(1)
    opt = InnerOptimizer("sgd", lr=0.3)
    first = SimulatedAttacker(opt, 1, "full", second_order=False)
    params = {n: p for n, p in body.named_parameters() if not n.startswith("head.")}
    grads = torch.autograd.grad(_loss(body, first, support, query, params=params), list(params.values()))
    # The reference: move a copy of the body by the attacker's one SGD step, then differentiate the query loss there.
    moved = TinyBody().double()
    moved.load_state_dict(body.state_dict())
    head = nn.Linear(4, 3).double()
    g = torch.Generator().manual_seed(7)
    bound = 1 / math.sqrt(4)
    with torch.no_grad():
        head.weight.copy_(torch.rand(3, 4, generator=g, dtype=torch.float64) * 2 * bound - bound)
        head.bias.copy_(torch.rand(3, generator=g, dtype=torch.float64) * 2 * bound - bound)
    inner = nn.functional.cross_entropy(head(moved.features(support[0][0])), support[0][1])
    body_params = [p for n, p in moved.named_parameters() if not n.startswith("head.")]
    step = torch.autograd.grad(inner, body_params + list(head.parameters()))
    with torch.no_grad():
        for p, d in zip(body_params + list(head.parameters()), step):
            p -= 0.3 * d
    expected = torch.autograd.grad(inverse_cross_entropy(head(moved.features(query[0])), query[1]), body_params)
    for g_got, g_want in zip(grads, expected):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


def test_the_attack_leaves_the_running_statistics_and_the_weights_alone():
    body, support, query = _setup(2)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    _loss(body, SimulatedAttacker(InnerOptimizer("adam", lr=0.1), 3, "full", True), support, query).backward()
    for key, value in body.state_dict().items():
        assert torch.equal(value, before[key]), key


DIST = AttackerDistribution(lr={"momentum": (0.01, 0.1), "adam": (1e-4, 1e-2)}, steps=(2, 9), linear_share=0.3,
                            second_order_steps=4)


def test_sampled_attackers_follow_the_configured_distribution():
    generator = torch.Generator().manual_seed(3)
    attackers = [sample_attacker(DIST, generator) for _ in range(4000)]
    again = torch.Generator().manual_seed(3)
    assert [sample_attacker(DIST, again) for _ in range(50)] == attackers[:50]
    by_name = {n: [a for a in attackers if a.optimizer.name == n] for n in DIST.lr}
    assert abs(len(by_name["adam"]) / 4000 - 0.5) < 0.03
    for name, group in by_name.items():
        low, high = DIST.lr[name]
        position = [(math.log(a.optimizer.lr) - math.log(low)) / (math.log(high) - math.log(low)) for a in group]
        assert 0 <= min(position) and max(position) <= 1
        assert abs(sum(position) / len(position) - 0.5) < 0.03  # log-uniform: uniform in log lr
        assert abs(sum(p < 0.25 for p in position) / len(position) - 0.25) < 0.03
    steps = [a.steps for a in attackers]
    assert set(steps) == set(range(2, 10))
    assert all(abs(steps.count(s) / 4000 - 1 / 8) < 0.025 for s in range(2, 10))
    assert abs(sum(a.mode == "linear" for a in attackers) / 4000 - 0.3) < 0.03
    assert all(a.second_order == (a.steps <= 4) for a in attackers)
    assert all(a.optimizer.momentum == 0.9 for a in attackers)


@pytest.mark.parametrize("bad, message", [({"lr": {"sgd": (0.1, 1.0)}}, "use some of momentum, adam"),
                                          ({"lr": {"adam": (0.01, 0.1)}, "head": "zeros"}, "use one of random"),
                                          ({"lr": {"adam": (0.1, 0.01)}}, "0 < low <= high"),
                                          ({"lr": {"adam": (0.01, 0.1)}, "steps": (0, 3)}, "1 <= low <= high")])
def test_a_bad_distribution_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        AttackerDistribution(**bad)


def test_the_resistance_losses_match_their_definitions_in_float64():
    logits = torch.randn(16, 5, dtype=torch.float64)
    targets = torch.randint(5, (16,))
    p = logits.softmax(-1)
    torch.testing.assert_close(resistance_loss("inverse-ce", logits, targets),
                               -torch.log(1 - p[torch.arange(16), targets]).mean())
    torch.testing.assert_close(resistance_loss("kl-uniform", logits, targets),
                               (0.2 * torch.log(0.2 / p)).sum(-1).mean())
    torch.testing.assert_close(resistance_loss("neg-entropy", logits, targets), (p * p.log()).sum(-1).mean())


@pytest.mark.parametrize("kind, floor", [("inverse-ce", 0.0), ("kl-uniform", 0.0), ("neg-entropy", -math.log(5))])
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_the_resistance_losses_stay_bounded_on_adversarial_logits(kind, floor, scale):
    # Logits a collapsing model would give: one class (the true one, or another) dominating by orders of magnitude.
    targets = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 5)
    logits[torch.arange(4), torch.tensor([0, 4, 2, 0])] = scale
    logits.requires_grad_(True)
    value = resistance_loss(kind, logits, targets)
    (grad,) = torch.autograd.grad(value, logits)
    assert math.isfinite(value.item()) and value.item() >= floor - 1e-6
    assert torch.isfinite(grad).all()
    # Minimising can at best reach the floor: at the uniform prediction, and for inverse-ce wherever p_y = 0.
    assert negative_entropy(torch.zeros(4, 5)).item() == pytest.approx(-math.log(5))
