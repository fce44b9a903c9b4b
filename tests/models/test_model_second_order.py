"""Hessian-vector products through every model: double backward and torch.func, checked by finite differences."""

import pytest
import torch
from torch.func import functional_call, grad, jvp
from torch.nn.functional import cross_entropy

from trd.models import build_model, untracked_batchnorm

NUM_CLASSES = 5


def labels(n):
    return torch.arange(n) % NUM_CLASSES


def hvp_double_backward(model, images, v):
    params = list(model.parameters())
    loss = cross_entropy(model(images), labels(len(images)))
    gradient = torch.autograd.grad(loss, params, create_graph=True)
    return torch.autograd.grad(sum((g * u).sum() for g, u in zip(gradient, v)), params)


def gradient_at_shift(model, images, v, step):
    params = list(model.parameters())
    with torch.no_grad():
        for p, u in zip(params, v):
            p.add_(u, alpha=step)
    gradient = torch.autograd.grad(cross_entropy(model(images), labels(len(images))), params)
    with torch.no_grad():
        for p, u in zip(params, v):
            p.sub_(u, alpha=step)
    return gradient


def random_direction(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in model.parameters()]


def test_double_backward_through_every_model(small_model, images):
    small_model.train()
    images = images[:2]  # BatchNorm needs two samples; more only costs time
    v = random_direction(small_model)
    with untracked_batchnorm(small_model):
        hv = hvp_double_backward(small_model, images, v)
    assert all(torch.isfinite(h).all() for h in hv)
    assert sum(h.abs().sum() for h in hv) > 0


TINY_FLOAT64 = {
    "cnn_bn": ("cnn", {"width": 2, "batchnorm": True}),
    "vit": ("vit", {"depth": 1, "width": 8, "heads": 2, "patch": 4, "mlp_dim": 8}),
    "wrn10_1": ("wrn10_1", {}),
}


@pytest.mark.parametrize("config", sorted(TINY_FLOAT64))
def test_hvp_matches_finite_differences(config):
    torch.manual_seed(0)
    name, options = TINY_FLOAT64[config]
    model = build_model(name, num_classes=NUM_CLASSES, image_size=8, **options).double().train()
    images = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = random_direction(model)
    # Small enough that no ReLU or max-pool switches within +-step (a 1e-5 step already
    # crosses kinks in wrn10_1), large enough for float64 rounding: about 1e-9 relative.
    step = 1e-7
    with untracked_batchnorm(model):
        hv = hvp_double_backward(model, images, v)
        plus = gradient_at_shift(model, images, v, step)
        minus = gradient_at_shift(model, images, v, -step)
    for exact, p, m in zip(hv, plus, minus):
        torch.testing.assert_close(exact, (p - m) / (2 * step), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("config", ["cnn_bn", "vit"])
def test_torch_func_hvp_agrees_with_double_backward(config):
    torch.manual_seed(0)
    name, options = TINY_FLOAT64[config]
    model = build_model(name, num_classes=NUM_CLASSES, image_size=8, **options).double().train()
    images = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = random_direction(model)
    params = {name: p.detach() for name, p in model.named_parameters()}
    tangents = dict(zip(params, v))

    def loss(p):
        return cross_entropy(functional_call(model, p, (images,)), labels(len(images)))

    with untracked_batchnorm(model):
        _, hv_func = jvp(grad(loss), (params,), (tangents,))
        hv = hvp_double_backward(model, images, v)
    for name, exact in zip(params, hv):
        torch.testing.assert_close(hv_func[name], exact)


def test_untracked_batchnorm_keeps_batch_statistics_and_buffers(images):
    model = build_model("cnn", num_classes=NUM_CLASSES, image_size=16, width=4).train()
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    with torch.no_grad():
        with untracked_batchnorm(model):
            inside = model(images)
        assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
        tracked = model(images)
    assert torch.equal(inside, tracked)
    assert model.stem[1].track_running_stats and int(model.stem[1].num_batches_tracked) == 1


def test_untracked_batchnorm_restores_on_error():
    model = build_model("cnn", num_classes=NUM_CLASSES, image_size=16, width=4)
    with pytest.raises(RuntimeError, match="boom"), untracked_batchnorm(model):
        raise RuntimeError("boom")
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
