"""CARTL's loss against a float64 reference built the slow obvious way: the feature distance per sample in a
loop, and the whole adversarial training loss as CE on the PGD examples plus lam times that distance at the
boundary block; the attack leaves BatchNorm's running statistics alone and the training forward moves them once."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trd.attacks.adversarial_training import PgdSettings, adversarial_training_loss
from trd.attacks.pgd import PixelSpace, cross_entropy_objective, pgd_linf
from trd.losses.feature_distance import feature_distance
from trd.models import build_model
from trd.models.batchnorm import untracked_batchnorm

SPACE = PixelSpace((0.5,) * 3, (0.5,) * 3)
PGD = PgdSettings(eps=8 / 255, step=2 / 255, steps=3)


def _reference_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for x, y in zip(a, b):
        total = total + torch.sqrt(((x - y) ** 2).sum()) / math.sqrt(x.numel())
    return total / len(a)


def test_feature_distance_and_its_gradient_match_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = feature_distance(a, b), _reference_distance(a, b)
    torch.testing.assert_close(ours, ref)
    grads = torch.autograd.grad(ours, [a, b])
    ref_grads = torch.autograd.grad(ref, [a, b])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(feature_distance, (a, b))


def _model():
    torch.manual_seed(0)
    return build_model("cnn", num_classes=4, image_size=8, width=4).double().train()


def test_the_cartl_loss_is_ce_on_the_pgd_examples_plus_lam_times_the_boundary_distance():
    model = _model()
    g = torch.Generator().manual_seed(2)
    images = SPACE.to_model(torch.rand(6, 3, 8, 8, generator=g, dtype=torch.float64))
    labels = torch.randint(0, 4, (6,), generator=g)
    lam, boundary = 0.3, model.block_names[-2]
    ours, scalars = adversarial_training_loss(model, images, labels, SPACE, PGD, lam=lam, boundary=boundary,
                                              generator=torch.Generator().manual_seed(5))
    reference_model = _model()
    with untracked_batchnorm(reference_model):
        adversarial = pgd_linf(cross_entropy_objective(reference_model, labels), images, SPACE, eps=PGD.eps,
                               step=PGD.step, steps=PGD.steps, generator=torch.Generator().manual_seed(5))
        clean_features = reference_model.forward_to(images, boundary)
    adversarial_features = reference_model.forward_to(adversarial, boundary)
    reference = F.cross_entropy(reference_model(adversarial), labels) + lam * _reference_distance(
        clean_features, adversarial_features)
    torch.testing.assert_close(ours, reference)
    grads = torch.autograd.grad(ours, list(model.parameters()))
    ref_grads = torch.autograd.grad(reference, list(reference_model.parameters()))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    assert scalars["feature_distance"] > 0


def test_the_attack_leaves_running_statistics_alone_and_the_training_forward_moves_them_once():
    model = _model()
    images = SPACE.to_model(torch.rand(6, 3, 8, 8, dtype=torch.float64))
    labels = torch.randint(0, 4, (6,))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    loss, _ = adversarial_training_loss(model, images, labels, SPACE, PGD, lam=0.5, boundary=model.block_names[-2])
    assert [int(m.num_batches_tracked) for m in norms] == [1] * len(norms)
