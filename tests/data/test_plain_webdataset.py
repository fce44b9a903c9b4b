"""Shards written by plain webdataset (not trd): JPEG/PNG/PPM/WebP, odd sizes, folders in keys."""

import io
import os

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from trd.data import build_loader, expand_urls, write_shards


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def flat_colour(i: int, size=(16, 16)) -> np.ndarray:
    image = np.zeros((*size, 3), dtype=np.uint8)
    image[...] = (10 * i % 256, 255 - 10 * i % 256, 128)
    return image


def test_jpg_shards_from_plain_webdataset_load(tmp_path):
    for split, count in (("train", 12), ("test", 5)):
        # ShardWriter's own encoder turns the arrays into JPEG (.jpg) and the int into cls.
        with wds.ShardWriter(str(tmp_path / f"{split}-%04d.tar"), maxcount=4, verbose=0) as sink:
            for i in range(count):
                sink.write({"__key__": f"folder/sample_{i}", "jpg": flat_colour(i), "cls": i % 3, "json": {"i": i}})
    role = {"train": str(tmp_path / "train-{0000..0002}.tar"), "test": str(tmp_path / "test-{0000..0001}.tar"),
            "num_classes": 3, "image_size": 16, "augment": False}
    loader = build_loader(role, "test", 5, train=False)
    assert loader.num_samples == 5
    (images, labels), = list(loader)
    assert labels.tolist() == [0, 1, 2, 0, 1]
    pixels = (images * 0.5 + 0.5) * 255
    for i in range(5):
        want = torch.tensor(flat_colour(i)[0, 0], dtype=torch.float32)
        assert torch.allclose(pixels[i, :, 8, 8], want, atol=6)  # JPEG is lossy
    train = build_loader(role, "train", 4, train=True)
    assert train.num_samples == 12 and len(list(train)) == 3


@pytest.mark.parametrize("ext, fmt", [("png", "PNG"), ("jpeg", "JPEG"), ("ppm", "PPM"), ("webp", "WEBP")])
def test_every_image_extension_is_read(tmp_path, ext, fmt):
    for split in ("train", "test"):
        with wds.TarWriter(str(tmp_path / f"{split}.tar")) as sink:
            for i in range(3):
                sink.write({"__key__": f"{i}", ext: encoded(flat_colour(i), fmt), "cls": str(i)})
    role = {"train": str(tmp_path / "train.tar"), "test": str(tmp_path / "test.tar"), "num_classes": 3, "image_size": 16}
    (images, labels), = list(build_loader(role, "test", 3, train=False))
    assert labels.tolist() == [0, 1, 2] and images.shape == (3, 3, 16, 16)


def test_other_sizes_and_modes_are_resized_to_rgb(tmp_path):
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 5:35] = 200  # covers the centred square the crop keeps, with margin for the resize filter
    grey = Image.fromarray(np.full((64, 64), 90, dtype=np.uint8), mode="L")
    for split in ("train", "test"):
        with wds.TarWriter(str(tmp_path / f"{split}.tar")) as sink:
            sink.write({"__key__": "wide", "png": encoded(wide, "PNG"), "cls": 0})
            buffer = io.BytesIO()
            grey.save(buffer, format="PNG")
            sink.write({"__key__": "grey", "png": buffer.getvalue(), "cls": 1})
    role = {"train": str(tmp_path / "train.tar"), "test": str(tmp_path / "test.tar"), "num_classes": 2, "image_size": 8}
    (images, labels), = list(build_loader(role, "test", 2, train=False))
    pixels = (images * 0.5 + 0.5) * 255
    assert images.shape == (2, 3, 8, 8)
    assert torch.allclose(pixels[0], torch.full((3, 8, 8), 200.0), atol=1)
    assert torch.allclose(pixels[1], torch.full((3, 8, 8), 90.0), atol=1)


def test_write_shards_round_trip_and_custom_normalisation(tmp_path):
    arrays = [flat_colour(i, (8, 8)) for i in range(7)]
    samples = [(f"{i:04d}", Image.fromarray(a) if i % 2 else a, i % 2) for i, a in enumerate(arrays)]
    paths = write_shards(samples, str(tmp_path), "train", maxcount=3)
    assert [os.path.basename(p) for p in paths] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert expand_urls(str(tmp_path / "train-{000000..000002}.tar")) == paths
    write_shards([("t0", encoded(arrays[0], "PNG"), 0)], str(tmp_path), "test", maxcount=3)
    role = {"train": str(tmp_path / "train-{000000..000002}.tar"), "test": str(tmp_path / "test-000000.tar"),
            "num_classes": 2, "image_size": 8, "mean": [0.0, 0.0, 0.0], "std": 1.0}
    (images, labels), = list(build_loader(role, "train", 7, train=False))
    assert labels.tolist() == [i % 2 for i in range(7)]
    want = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(images, want, atol=1e-6)


def test_omegaconf_role_nodes_are_accepted(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    write_shards([(f"{i}", flat_colour(i, (8, 8)), i % 2) for i in range(4)], str(tmp_path), "train", 4)
    write_shards([(f"{i}", flat_colour(i, (8, 8)), i % 2) for i in range(2)], str(tmp_path), "test", 4)
    config = omegaconf.OmegaConf.create({"root": str(tmp_path), "role": {
        "train": "${root}/train-000000.tar", "test": "${root}/test-000000.tar", "num_classes": 2, "image_size": 8}})
    loader = build_loader(config.role, "train", 2, train=True)
    assert loader.steps_per_epoch == 2 and len(list(loader)) == 2
