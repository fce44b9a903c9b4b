"""UNSIR's error-maximising noise: each forgotten class's noise raises the model's loss on that class's own
label, and the model is left as it was."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trd.losses.unsir import error_maximising_noise, noise_batch
from trd.models import build_model


def test_each_class_noise_maximises_the_loss_of_its_own_label():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=6, image_size=8, width=4).train()
    with torch.no_grad():
        model.head.weight.mul_(30)  # an untrained head barely tells inputs apart: give the noise room to work
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    start = {c: torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)) for c in (4, 5)}
    noise = error_maximising_noise(model, [4, 5], (3, 8, 8), count=8, steps=30, lr=0.1, reg=0.0, generator=g)
    assert sorted(noise) == [4, 5] and noise[4].shape == (8, 3, 8, 8)
    assert not torch.equal(noise[4], noise[5])  # learnt against different labels
    model.eval()
    with torch.no_grad():
        for c in (4, 5):
            label = torch.full((8,), c)
            assert F.cross_entropy(model(noise[c]), label) > F.cross_entropy(model(start[c]), label) + 1.0
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_noise_batch_labels_every_image_with_its_class():
    noise = {7: torch.full((3, 1), 7.0), 9: torch.full((5, 1), 9.0)}
    images, labels = noise_batch(noise, 50, torch.Generator().manual_seed(0))
    assert images.shape == (50, 1)
    assert torch.equal(images[:, 0].long(), labels)
    assert set(labels.tolist()) == {7, 9}
