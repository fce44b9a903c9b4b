"""CARTL's transfer parts: after training, each layer under Non-Expansive Fine-Tuning has spectral norm at most
beta (and keeps it once the parametrization is baked into a plain model), and the frozen blocks do not change,
bit for bit, under each of the four BatchNorm options, while the trained part's BatchNorm changes only as its
option allows."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from trd.models import build_model
from trd.models.last_k import freeze_for_last_k, frozen_parts, train_mode, trained_parts
from trd.models.neft import apply_neft, matrix_spectral_norm, neft_layers, remove_neft

K = 1


def _model():
    torch.manual_seed(0)
    return build_model("cnn", num_classes=4, image_size=8, width=4, hidden=8)


def _train(model, steps=12, k=K, bn_stats="update"):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        train_mode(model, k, bn_stats)
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_each_neft_layer_has_spectral_norm_at_most_beta_after_training_and_once_released(beta):
    model = _model()
    freeze_for_last_k(model, K)
    names = apply_neft(model, K, beta, power_iterations=1)
    assert names == [name for name, _ in neft_layers(model, K)] and "head" in names and "block1.0" in names
    _train(model, steps=30)
    model.eval()
    for name in names:
        norm = matrix_spectral_norm(model.get_submodule(name).weight)
        assert norm <= beta * 1.02, f"{name}: spectral norm {norm:.4f} > beta {beta}"
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
    remove_neft(model)
    assert all(".parametrizations." not in key for key in model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    for name in names:
        assert matrix_spectral_norm(model.get_submodule(name).weight) <= beta * 1.02
    assert matrix_spectral_norm(model.get_submodule("stem.0").weight) > 0  # the frozen stem is not normalised
    assert "stem.0" not in names


def _snapshot(modules):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def _bn_state(model, k):
    return [{k2: v.clone() for k2, v in bn.state_dict().items()} for part in trained_parts(model, k)
            for bn in part.modules() if isinstance(bn, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("bn_stats,bn_affine", list(itertools.product(["update", "reuse"], ["train", "freeze"])))
@pytest.mark.parametrize("neft", [False, True])
def test_frozen_blocks_do_not_change_bit_for_bit_under_each_batchnorm_option(bn_stats, bn_affine, neft):
    k = 2  # block0 and block1 trained (each with its BatchNorm), the stem frozen
    model = _model()
    freeze_for_last_k(model, k, bn_affine)
    if neft:
        apply_neft(model, k, 1.0)
    frozen_before = _snapshot(frozen_parts(model, k))
    bn_before = _bn_state(model, k)
    _train(model, k=k, bn_stats=bn_stats)
    for before, after in zip(frozen_before, _snapshot(frozen_parts(model, k))):
        for key in before:
            assert torch.equal(before[key], after[key]), f"frozen {key} changed"
    bn_after = _bn_state(model, k)
    stats = ("running_mean", "running_var")
    affine = ("weight", "bias")
    for before, after in zip(bn_before, bn_after):
        assert all(torch.equal(before[s], after[s]) for s in stats) == (bn_stats == "reuse")
        assert all(torch.equal(before[a], after[a]) for a in affine) == (bn_affine == "freeze")
