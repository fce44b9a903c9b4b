"""PGD in pixel space: every iterate stays in the eps-ball and in [0, 1] whatever the input normalisation, the
attack lowers an undefended model's accuracy, shorter runs are prefixes of longer ones, and a budget in
normalised units is eps * std per channel."""
from __future__ import annotations

import pytest
import torch

from trd.attacks.pgd import PixelSpace, cross_entropy_objective, pgd_iterates, pgd_linf
from trd.models import build_model

SPACE = PixelSpace((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


def _model_and_batch(n=32):
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=5, image_size=8, width=8).eval()
    pixels = torch.rand(n, 3, 8, 8)
    pixels[:4] = 0.0  # images at the edge of the valid range
    pixels[4:8] = 1.0
    images = SPACE.to_model(pixels)
    with torch.no_grad():
        labels = model(images).argmax(1)  # the model is right on every clean image
    return model, images, labels, pixels


@pytest.mark.parametrize("random_start", [True, False])
def test_every_iterate_stays_in_the_eps_ball_and_the_valid_pixel_range(random_start):
    model, images, labels, pixels = _model_and_batch()
    eps = 8 / 255
    for _, adversarial in pgd_iterates(cross_entropy_objective(model, labels), images, SPACE, eps=eps, step=3 / 255,
                                       steps=10, random_start=random_start, generator=torch.Generator().manual_seed(1)):
        moved = SPACE.to_pixels(adversarial)
        assert (moved - pixels).abs().max() <= eps + 1e-6
        assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6


def test_pgd_lowers_an_undefended_models_accuracy_and_more_steps_lower_it_no_less():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))  # varied decisions at init
    images = SPACE.to_model(torch.rand(64, 3, 8, 8))
    with torch.no_grad():
        labels = model(images).argmax(1)
    accuracies = {}
    for t, adversarial in pgd_iterates(cross_entropy_objective(model, labels), images, SPACE, eps=16 / 255,
                                       step=4 / 255, steps=20, generator=torch.Generator().manual_seed(0)):
        with torch.no_grad():
            accuracies[t] = float((model(adversarial).argmax(1) == labels).float().mean())
    assert accuracies[20] < 0.5  # from 100% clean
    assert accuracies[20] <= accuracies[1]


def test_a_shorter_run_is_the_prefix_of_a_longer_one_from_the_same_seed():
    model, images, labels, _ = _model_and_batch()
    objective = cross_entropy_objective(model, labels)
    short = pgd_linf(objective, images, SPACE, eps=8 / 255, step=2 / 255, steps=5,
                     generator=torch.Generator().manual_seed(3))
    iterates = dict(pgd_iterates(objective, images, SPACE, eps=8 / 255, step=2 / 255, steps=12,
                                 generator=torch.Generator().manual_seed(3)))
    assert torch.equal(short, iterates[5])


def test_no_step_and_no_random_start_returns_the_clean_images():
    model, images, labels, _ = _model_and_batch()
    same = pgd_linf(cross_entropy_objective(model, labels), images, SPACE, eps=8 / 255, step=2 / 255, steps=0,
                    random_start=False)
    torch.testing.assert_close(same, images, rtol=0, atol=1e-6)


def test_a_budget_in_normalised_units_is_eps_times_std_per_channel():
    model, images, labels, pixels = _model_and_batch()
    adversarial = pgd_linf(cross_entropy_objective(model, labels), images, SPACE, eps=0.1, step=0.05, steps=4,
                           normalised_budget=True)
    moved = (SPACE.to_pixels(adversarial) - pixels).abs().amax(dim=(0, 2, 3))
    assert torch.all(moved <= torch.tensor(SPACE.std) * 0.1 + 1e-6)
    assert moved[2] > 0.1 * SPACE.std[0] + 1e-4  # the widest channel uses more than the narrowest's radius
    assert (SPACE.to_model(SPACE.to_pixels(adversarial)) - adversarial).abs().max() < 1e-5
