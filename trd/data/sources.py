"""Raw datasets on disk (torchvision's layouts, ImageFolder trees, trd's embedded data) to shards.

Readers parse the documented on-disk formats directly rather than through
torchvision's dataset classes: those verify md5 sums of the original downloads and
refuse any other file (a re-packed copy, the tiny files of a test), while the formats
themselves are simple and fixed.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .embedded import EMBEDDED, get_embedded, materialize
from .errors import DataError
from .writer import shard_pattern, write_shards

KEEP_ENCODED = (".png", ".jpg", ".jpeg")


@dataclass
class SourceSplit:
    count: int
    # Yields (key, image, label); image is an HxWx3 uint8 array or encoded image bytes.
    samples: Callable[[np.ndarray], Iterator[tuple[str, object, int]]]  # argument: order of indices


@dataclass
class Source:
    classes: list[str]
    splits: dict[str, SourceSplit]


def _find_dir(root: str, name: str, what: str, fix: str) -> str:
    for candidate in (os.path.join(root, name), root):
        if os.path.basename(os.path.normpath(candidate)) == name and os.path.isdir(candidate):
            return candidate
    raise DataError(f"no {what} folder '{name}' under --root {root}: {fix}")


def _need(path: str, fix: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"missing {path}: {fix}")
    return path


def _unpickle(path: str) -> dict:
    with open(path, "rb") as f:
        # The official files are Python 2 pickles (str keys under latin1); re-packed
        # Python 3 ones have bytes keys. Normalise to str.
        blob = pickle.load(f, encoding="latin1")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in blob.items()}


def _array_split(images: np.ndarray, labels: np.ndarray) -> SourceSplit:
    def samples(order):
        for i in order:
            yield f"{int(i):07d}", images[i], int(labels[i])

    return SourceSplit(len(labels), samples)


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def cifar(root: str, variant: str) -> Source:
    """torchvision's CIFAR-10 (cifar-10-batches-py/) or CIFAR-100 (cifar-100-python/) python pickles."""
    folder_name, files, label_key, meta_file, names_key = {
        "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}, "labels", "batches.meta", "label_names"),
        "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels", "meta", "fine_label_names"),
    }[variant]
    fix = f"download it with torchvision.datasets.{variant.upper()}('{root}', download=True) or unpack the python version there"
    folder = _find_dir(root, folder_name, variant, fix)
    classes = _names(_unpickle(_need(os.path.join(folder, meta_file), fix))[names_key])
    splits = {}
    for split, names in files.items():
        blobs = [_unpickle(_need(os.path.join(folder, n), fix)) for n in names]
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in blobs])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in blobs])
        splits[split] = _array_split(images, labels)
    return Source(classes, splits)


def svhn(root: str) -> Source:
    """SVHN cropped digits: train_32x32.mat / test_32x32.mat (X: 32x32x3xN, y: Nx1, digit 0 stored as 10)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading SVHN .mat files needs scipy: pip install scipy") from None
    fix = f"download it with torchvision.datasets.SVHN('{root}', split='train'/'test', download=True)"
    splits = {}
    for split in ("train", "test"):
        mat = loadmat(_need(os.path.join(root, f"{split}_32x32.mat"), fix))
        images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        splits[split] = _array_split(images, labels)
    return Source([str(d) for d in range(10)], splits)


def stl10(root: str) -> Source:
    """STL-10 binaries (stl10_binary/): 3x96x96 uint8 images stored column-major, labels 1..10."""
    fix = f"download it with torchvision.datasets.STL10('{root}', download=True) or unpack stl10_binary.tar.gz there"
    folder = _find_dir(root, "stl10_binary", "STL-10", fix)
    names_file = os.path.join(folder, "class_names.txt")
    classes = open(names_file).read().split() if os.path.isfile(names_file) else [str(i) for i in range(10)]
    splits = {}
    for split in ("train", "test"):
        raw = np.fromfile(_need(os.path.join(folder, f"{split}_X.bin"), fix), dtype=np.uint8)
        # Column-major per channel: reversing the last two axes gives rows x columns.
        images = np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1))
        labels = np.fromfile(_need(os.path.join(folder, f"{split}_y.bin"), fix), dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images):
            raise DataError(f"{folder}/{split}_X.bin holds {len(images)} images but {split}_y.bin {len(labels)} labels: re-download STL-10")
        splits[split] = _array_split(images, labels)
    return Source(classes, splits)


def _file_split(files: list[tuple[str, int]]) -> SourceSplit:
    def samples(order):
        from PIL import Image

        for i in order:
            path, label = files[i]
            if os.path.splitext(path)[1].lower() in KEEP_ENCODED:
                # PNG/JPEG files keep their original bytes: no re-compression.
                with open(path, "rb") as f:
                    image = f.read()
            else:
                with Image.open(path) as opened:
                    image = np.asarray(opened.convert("RGB"))
            yield f"{int(i):07d}", image, label

    return SourceSplit(len(files), samples)


def _tinyimagenet_val(val_dir: str, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """TinyImageNet's val/: images/*.JPEG flat, classes listed in val_annotations.txt."""
    files = []
    with open(os.path.join(val_dir, "val_annotations.txt")) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            name, wnid = line.split("\t")[:2]
            if wnid not in class_to_idx:
                raise DataError(f"{val_dir}/val_annotations.txt line {line_number}: class {wnid} has no folder in train/: use the matching train/ tree")
            files.append((_need(os.path.join(val_dir, "images", name), "re-extract the TinyImageNet archive"), class_to_idx[wnid]))
    return files


def imagefolder(root: str) -> Source:
    """``root/train/<class>/**/<image>`` and ``root/val|test/...``; classes are sorted folder names
    of train/. TinyImageNet's val/ (images/ + val_annotations.txt) is read by its annotations."""
    from torchvision.datasets import ImageFolder

    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"no train/ folder under --root {root}: an ImageFolder tree needs root/train/<class>/<images> and root/val/ or root/test/")
    train = ImageFolder(train_dir, allow_empty=True)
    splits = {"train": _file_split([(p, int(c)) for p, c in train.samples])}
    for name in ("val", "test"):
        eval_dir = os.path.join(root, name)
        if os.path.isfile(os.path.join(eval_dir, "val_annotations.txt")):
            splits["test"] = _file_split(_tinyimagenet_val(eval_dir, train.class_to_idx))
            break
        subdirs = [d for d in sorted(os.listdir(eval_dir)) if os.path.isdir(os.path.join(eval_dir, d))] if os.path.isdir(eval_dir) else []
        if subdirs and set(subdirs) <= set(train.classes):
            # Map by train's class index, so a class missing from val/ cannot shift labels.
            evaluation = ImageFolder(eval_dir, allow_empty=True)
            splits["test"] = _file_split([(p, train.class_to_idx[evaluation.classes[c]]) for p, c in evaluation.samples])
            break
    if "test" not in splits:
        raise DataError(f"no labelled val/ or test/ folder under {root}: add root/val/<class>/<images> (class folders as in train/) or TinyImageNet's val/val_annotations.txt")
    return Source(list(train.classes), splits)


def write_source(source: Source, out: str, maxcount: int, shuffle_seed: int | None) -> dict:
    """Write every split of ``source`` to ``out/<split>-NNNNNN.tar``; train order is shuffled."""
    result = {"num_classes": len(source.classes), "classes": source.classes, "splits": {}}
    for split, data in source.splits.items():
        order = np.arange(data.count)
        if split == "train" and shuffle_seed is not None:
            # Sources are often sorted by class; shuffling once here lets shard-level
            # shuffling plus a small shuffle buffer give well-mixed batches.
            order = np.random.default_rng(shuffle_seed).permutation(data.count)
        paths = write_shards(data.samples(order), out, split, maxcount)
        result["splits"][split] = {"pattern": shard_pattern(paths), "shards": len(paths), "samples": int(data.count)}
        stale = sorted(set(glob.glob(os.path.join(out, f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))) - set(paths))
        result["splits"][split]["stale"] = stale
    return result


def write_embedded(name: str, out: str, image_size: int) -> dict:
    dataset = get_embedded(name)
    urls = {split: [os.path.join(out, f"{split}-{i:06d}.tar") for i in range(n)] for split, n in (("train", dataset.train_shards), ("test", dataset.test_shards))}
    materialize(name, urls["train"], urls["test"], image_size)
    counts = {"train": dataset.task.train_per_class, "test": dataset.task.test_per_class}
    return {
        "num_classes": dataset.num_classes,
        "classes": [f"class_{c}" for c in dataset.task.classes],
        "embedded": name,
        "splits": {
            split: {"pattern": shard_pattern(paths), "shards": len(paths), "samples": counts[split] * dataset.num_classes, "stale": []}
            for split, paths in urls.items()
        },
    }


DATASETS = ("cifar10", "cifar100", "svhn", "stl10", "imagefolder", "embedded")


def make_shards(dataset: str, *, out: str, root: str | None = None, maxcount: int = 1000, shuffle_seed: int | None = 0,
                name: str | None = None, image_size: int = 32) -> dict:
    """Write shards of ``dataset`` into ``out`` and a meta.json describing them; return that description."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    if dataset == "embedded":
        if name is None:
            raise DataError(f"--dataset embedded needs --name, one of {', '.join(sorted(EMBEDDED))}")
        result = write_embedded(name, out, image_size)
    else:
        if root is None or not os.path.isdir(root):
            raise DataError(f"--root {root!r} is not a directory: point it at the folder holding the raw {dataset} files")
        readers = {"cifar10": lambda: cifar(root, "cifar10"), "cifar100": lambda: cifar(root, "cifar100"),
                   "svhn": lambda: svhn(root), "stl10": lambda: stl10(root), "imagefolder": lambda: imagefolder(root)}
        result = write_source(readers[dataset](), out, maxcount, shuffle_seed)
        result["image_size"] = image_size
    result["dataset"] = dataset
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def role_snippet(result: dict, image_size: int) -> str:
    """The role node to paste into a data config."""
    lines = [f"train: {result['splits']['train']['pattern']}", f"test: {result['splits']['test']['pattern']}",
             f"num_classes: {result['num_classes']}", f"image_size: {image_size}"]
    if result.get("embedded"):
        lines.append(f"embedded: {result['embedded']}")
    return "\n".join(lines)
