"""The target-agnostic attack: its objective drives the public model's features toward m * e_neuron, and its
success rate counts only clean-correct samples, so it is 0 when the perturbed images are the clean ones."""
from __future__ import annotations

import torch

from trd.attacks.agnostic import attack_success, feature_target_objective
from trd.attacks.pgd import PixelSpace, pgd_linf
from trd.models import build_model


def test_asr_is_zero_when_the_adversarial_images_are_the_clean_ones():
    correct = torch.tensor([True, False, True, True, False])
    assert attack_success(correct, correct) == (0, 3)


def test_asr_counts_clean_correct_samples_turned_wrong_and_nothing_else():
    clean = torch.tensor([True, True, True, False, False])
    adversarial = torch.tensor([False, True, False, True, False])
    assert attack_success(clean, adversarial) == (2, 3)


def test_the_attack_moves_the_public_models_features_toward_the_target_neuron():
    torch.manual_seed(0)
    public = build_model("cnn", num_classes=5, image_size=8, width=8).eval()
    space = PixelSpace((0.5,) * 3, (0.5,) * 3)
    images = space.to_model(torch.rand(16, 3, 8, 8))
    objective = feature_target_objective(public.features, magnitude=1000.0, neuron=2)
    adversarial = pgd_linf(objective, images, space, eps=0.4, step=0.05, steps=10, random_start=False,
                           normalised_budget=True)
    with torch.no_grad():
        before, after = public.features(images), public.features(adversarial)
        assert float(objective(adversarial).mean()) > float(objective(images).mean())
        assert float(after[:, 2].mean()) > float(before[:, 2].mean())
