"""SKD's loss and misses against a float64 reference that runs trd's small CNN layer by layer, with the last
ReLU's input taken by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trd.losses.skd import misses, relu_inputs, skd_loss
from trd.models import build_model


def _cnn():
    torch.manual_seed(0)
    return build_model("cnn", num_classes=3, image_size=8, width=2).double().train()


def _by_hand(model, x):
    """(pre-activation of the last ReLU, features) with every layer called explicitly."""
    h = model.block0(model.stem(x))
    conv, bn, _relu = model.block1
    z = bn(conv(h))
    return z, F.adaptive_avg_pool2d(torch.relu(z), 1).flatten(1)


def test_skd_loss_and_its_gradient_equal_the_layer_by_layer_reference():
    model = _cnn()
    g = torch.Generator().manual_seed(1)
    good, bad = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    teacher = torch.rand(4, model.feature_dim, generator=g, dtype=torch.float64)
    loss, parts = skd_loss(model, teacher, good, bad, constant=-3.0, bad_weight=0.5)
    body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    grads = torch.autograd.grad(loss, body)

    z, features = _by_hand(model, torch.cat([good, bad]))
    want = ((features[:4] - teacher) ** 2).mean() / (teacher ** 2).mean() + 0.5 * ((z[4:] + 3.0) ** 2).mean() / 9.0
    expected = torch.autograd.grad(want, body)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    assert parts["skd/bad"] == pytest.approx(((z[4:] + 3.0) ** 2).mean().item() / 9.0, rel=1e-12)
    for got, ref in zip(grads, expected):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_a_replacement_malicious_term_is_normalised_like_the_default_one():
    model = _cnn()
    g = torch.Generator().manual_seed(2)
    good, bad = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    teacher = torch.rand(4, model.feature_dim, generator=g, dtype=torch.float64)
    hinge = lambda pre, constant: torch.relu(pre - constant).pow(2).mean()  # noqa: E731
    loss, parts = skd_loss(model, teacher, good, bad, constant=-0.5, bad_weight=2.0, bad_term=hinge)
    body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    grads = torch.autograd.grad(loss, body)

    z, features = _by_hand(model, torch.cat([good, bad]))
    bad_ref = torch.relu(z[4:] + 0.5).pow(2).mean() / 0.25
    want = ((features[:4] - teacher) ** 2).mean() / (teacher ** 2).mean() + 2.0 * bad_ref
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    assert parts["skd/bad"] == pytest.approx(bad_ref.item(), rel=1e-12)
    for got, ref in zip(grads, torch.autograd.grad(want, body)):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_relu_inputs_records_a_reused_relu_at_each_call_and_lets_go_after():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    x = torch.randn(3, 2)
    with relu_inputs(model) as seen:
        model(x)
    assert len(seen) == 2
    torch.testing.assert_close(seen[-1], model[2](relu(model[0](x))))
    model(x)
    assert len(seen) == 2


def test_misses_counts_images_whose_features_are_not_all_zero():
    model = _cnn().eval()
    x = torch.randn(10, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        model.block1[1].bias.fill_(-1e3)  # the last BatchNorm's shift: every unit dead for every image
    assert misses(model, [(x, torch.zeros(10))], torch.device("cpu")) == 0.0
    with torch.no_grad():
        model.block1[1].bias.fill_(1e3)
    assert misses(model, [(x[:4], torch.zeros(4)), (x[4:], torch.zeros(6))], torch.device("cpu")) == 1.0


def test_a_model_without_relu_is_refused():
    class Plain(nn.Module):
        def features(self, x):
            return x
    with pytest.raises(ValueError, match="no nn.ReLU"):
        skd_loss(Plain(), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), -1.0)
