"""Shards whose pixels encode a sample id, for the data tests (a uniquely named module: every test
folder has a conftest.py, so `from conftest import` would be ambiguous)."""

from __future__ import annotations

import os

import numpy as np
import torch
import webdataset as wds

ID_IMAGE_SIZE = 8


def id_image(sample_id: int, size: int = ID_IMAGE_SIZE) -> np.ndarray:
    """An image whose top-left pixel spells ``sample_id`` (R + 256 * G)."""
    image = np.full((size, size, 3), 17, dtype=np.uint8)
    image[0, 0] = (sample_id % 256, sample_id // 256, 0)
    return image


def image_ids(images: torch.Tensor) -> list[int]:
    """Sample ids back from a normalised (mean 0.5, std 0.5) batch of id images."""
    pixels = torch.round((images[:, :, 0, 0] * 0.5 + 0.5) * 255).long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def write_id_shards(directory, counts: list[int], num_classes: int = 5, prefix: str = "train") -> str:
    """Shards with ``counts[i]`` samples each; sample id n has label n % num_classes. Returns the pattern."""
    os.makedirs(directory, exist_ok=True)
    sample_id = 0
    for shard, count in enumerate(counts):
        with wds.TarWriter(os.path.join(directory, f"{prefix}-{shard:06d}.tar")) as sink:
            for _ in range(count):
                sink.write({"__key__": f"s{sample_id:05d}", "png": id_image(sample_id), "cls": sample_id % num_classes})
                sample_id += 1
    if len(counts) == 1:
        return os.path.join(directory, f"{prefix}-000000.tar")
    return os.path.join(directory, f"{prefix}-{{000000..{len(counts) - 1:06d}}}.tar")


def id_role(directory, train_counts: list[int], test_counts: list[int] | None = None, num_classes: int = 5, **extra) -> dict:
    return {
        "train": write_id_shards(os.path.join(directory, "train"), train_counts, num_classes, "train"),
        "test": write_id_shards(os.path.join(directory, "test"), test_counts or [4], num_classes, "test"),
        "num_classes": num_classes,
        "image_size": ID_IMAGE_SIZE,
        "augment": False,
        **extra,
    }


def epoch_ids(loader, start_step: int = 0) -> list[list[int]]:
    """Sample ids of every batch the loader yields from ``start_step``."""
    return [image_ids(images) for images, _ in loader.iter_from(start_step)]
