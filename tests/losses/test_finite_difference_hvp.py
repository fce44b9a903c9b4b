"""hvp=finite_difference: the GC gradient from differences of chunk gradients points where the exact one does
(cosine >= 0.99 in float32, at initialisation and after training), replays dropout masks, leaves the model and its
running statistics as the exact execution does, and its step-size rule survives zero directions and huge weights."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trd.losses import distillation_loss
from trd.losses.finite_difference import check_precision, norm, step_size
from trd.losses.gradient_collision import JointTerm, collision_with_joint_loss
from trd.models import build_model


def _gradient(model, x, y, chunks, hvp, normalized=False, joint=None):
    model.zero_grad(set_to_none=True)
    gc, joint_loss, _ = collision_with_joint_loss(model, x, y, chunks, joint, normalized=normalized, hvp=hvp)
    (gc if joint_loss is None else 0.5 * gc + 0.5 * joint_loss).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _cosine(a, b):
    return F.cosine_similarity(a.double(), b.double(), dim=0).item()


def _data(n=16, size=16, classes=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _train(model, steps=30):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        x, y = _data(seed=100 + step)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


# batched (ReLU and max pooling replayed), per chunk; ResNet-18 and WRN-28-4 at 32 px: bench/fd_accuracy.py
@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_finite_difference_gradient_points_where_the_exact_one_does(arch):
    options = {"vit": {"depth": 1, "width": 16, "heads": 2, "patch": 4}}.get(arch, {"width": 8} if arch == "cnn" else {})
    torch.manual_seed(0)
    model = build_model(arch, num_classes=4, image_size=16, **options).train()
    x, y = _data()
    for point in ("init", "trained"):
        if point == "trained":
            _train(model)
        for chunks in (2, 4):
            exact = _gradient(copy.deepcopy(model), x, y, chunks, "exact")
            approx = _gradient(copy.deepcopy(model), x, y, chunks, "finite_difference")
            assert _cosine(exact, approx) >= 0.99, (arch, point, chunks, _cosine(exact, approx))


def test_ngc_and_a_joint_loss_under_finite_differences():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=4, image_size=16, width=8).train()
    x, y = _data()
    teacher_logits = torch.randn(16, 4)
    joint = JointTerm(lambda logits, rows: distillation_loss(logits, teacher_logits[rows], 2.0))
    for normalized, term in ((True, None), (False, joint)):
        exact = _gradient(copy.deepcopy(model), x, y, 4, "exact", normalized, term)
        approx = _gradient(copy.deepcopy(model), x, y, 4, "finite_difference", normalized, term)
        assert _cosine(exact, approx) >= 0.99


class _DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.Tanh(), nn.Dropout(0.3), nn.Linear(32, 4))

    def forward(self, x):
        return self.body(x)


def test_dropout_masks_are_replayed_in_the_shifted_pass():
    torch.manual_seed(0)
    model = _DropoutNet().train()
    x, y = _data()
    torch.manual_seed(5)
    exact = _gradient(copy.deepcopy(model), x, y, 4, "exact")
    torch.manual_seed(5)
    approx = _gradient(copy.deepcopy(model), x, y, 4, "finite_difference")
    assert _cosine(exact, approx) >= 0.99


def test_weights_and_running_statistics_end_as_after_the_exact_step():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=4, image_size=16, width=8).train()
    x, y = _data()
    exact, approx = copy.deepcopy(model), copy.deepcopy(model)
    _gradient(exact, x, y, 4, "exact")
    _gradient(approx, x, y, 4, "finite_difference")
    for (name, a), b in zip(exact.state_dict().items(), approx.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_step_size_rule_edge_cases():
    assert step_size(3.0, 0.0, torch.float32) == 0.0  # a zero direction contributes nothing
    assert step_size(3.0, float("nan"), torch.float32) == 0.0
    eps = step_size(4.0, 2.0, torch.float32, scale=1.0)
    assert eps * 2.0 == pytest.approx(math.sqrt(torch.finfo(torch.float32).eps) * 5.0)
    assert step_size(4.0, 2.0, torch.float64) < eps  # more digits, a smaller step
    huge = [torch.full((1000,), 1e30)]  # its squared norm overflows float32
    assert math.isfinite(norm(huge)) and norm(huge) == pytest.approx(1e30 * math.sqrt(1000))
    assert math.isfinite(step_size(norm(huge), 1e-3, torch.float32))
    with pytest.raises(ValueError, match="positive"):
        step_size(1.0, 1.0, torch.float32, scale=0.0)
    with pytest.raises(ValueError, match="deepspeed.precision=fp32"):
        check_precision([torch.zeros(2, dtype=torch.bfloat16)])


def test_zero_direction_and_huge_weights_give_finite_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4, bias=False))
    x, y = _data()
    grad = _gradient(model, torch.zeros_like(x), y, 4, "finite_difference")  # every chunk gradient, so v_m, is 0
    assert torch.equal(grad, torch.zeros_like(grad))
    with torch.no_grad():
        model[1].weight.mul_(1e15)
    grad = _gradient(model, x, y, 4, "finite_difference")
    assert torch.isfinite(grad).all()
