"""Datasets in torchvision's on-disk layouts, filled with uniform-noise images (incompressible: the dearest decode
an image of that size can have), for the bench scripts that measure trd's data path and stages at a real
dataset's size without the dataset: CIFAR-10/100 python pickles and TinyImageNet's ImageFolder tree of JPEGs."""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
from PIL import Image

CIFAR = {"cifar10": ("cifar-10-batches-py", 10, "labels", "batches.meta", "label_names"),
         "cifar100": ("cifar-100-python", 100, "fine_labels", "meta", "fine_label_names")}


def write_cifar(root: str, variant: str, train: int, test: int, seed: int = 0) -> str:
    """A ``cifar-10-batches-py`` (5 train batches) or ``cifar-100-python`` folder under root; returns root."""
    folder_name, classes, label_key, meta_file, names_key = CIFAR[variant]
    folder = os.path.join(root, folder_name)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = ([(f"data_batch_{i}", train // 5 + (i <= train % 5)) for i in range(1, 6)] + [("test_batch", test)]
             if variant == "cifar10" else [("train", train), ("test", test)])
    for name, count in files:
        blob = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                label_key: rng.integers(0, classes, count).tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(blob, f)
    with open(os.path.join(folder, meta_file), "wb") as f:
        pickle.dump({names_key: [f"class{i}" for i in range(classes)]}, f)
    return root


def noise_jpeg(rng: np.random.Generator, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tinyimagenet(root: str, train: int, test: int, classes: int = 8, size: int = 64, seed: int = 0) -> str:
    """TinyImageNet's tree (train/<wnid>/images/*.JPEG, val/images + val/val_annotations.txt); returns root."""
    rng = np.random.default_rng(seed)
    wnids = [f"n{index:08d}" for index in range(classes)]
    for wnid in wnids:
        images = os.path.join(root, "train", wnid, "images")
        os.makedirs(images, exist_ok=True)
        for i in range(train // classes):
            with open(os.path.join(images, f"{wnid}_{i}.JPEG"), "wb") as f:
                f.write(noise_jpeg(rng, size))
    os.makedirs(os.path.join(root, "val", "images"), exist_ok=True)
    lines = []
    for i in range(test):
        with open(os.path.join(root, "val", "images", f"val_{i}.JPEG"), "wb") as f:
            f.write(noise_jpeg(rng, size))
        lines.append(f"val_{i}.JPEG\t{wnids[i % classes]}\t0\t0\t{size - 1}\t{size - 1}")
    with open(os.path.join(root, "val", "val_annotations.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root
