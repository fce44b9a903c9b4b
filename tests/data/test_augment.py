"""Train augmentation: zero-padded random crop and horizontal flip, seeded per batch."""

import torch

from trd.data.augment import crop_padding, normalise, random_crop_flip


def reference(images, generator):
    b, _, h, w = images.shape
    pad = crop_padding(h)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    out = []
    for i in range(b):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out), flip


def test_matches_a_per_sample_reference():
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    got = random_crop_flip(images, torch.Generator().manual_seed(5))
    want, flip = reference(images, torch.Generator().manual_seed(5))
    assert torch.equal(got, want)
    assert 0 < int(flip.sum()) < 64
    assert got.dtype == torch.uint8 and got.shape == images.shape
    # Some crops moved the content: not the identity.
    assert not torch.equal(got, images)


def test_same_generator_seed_same_augmentation():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(images, torch.Generator().manual_seed(1))
    b = random_crop_flip(images, torch.Generator().manual_seed(1))
    c = random_crop_flip(images, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_padding_scales_with_image_size():
    assert crop_padding(32) == 4 and crop_padding(64) == 8 and crop_padding(8) == 1


def test_normalise():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    out = normalise(images, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([-2.0, -1.0, -0.5]))
    assert torch.allclose(out[1, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
