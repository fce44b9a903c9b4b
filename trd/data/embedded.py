"""trd's embedded generated datasets: the registry, and writing them where a role's patterns point.

A role node names one with ``embedded: <name>`` next to ordinary ``train``/``test``
shard patterns; the shards are generated on first use, so configs, loaders and
make_shards treat them exactly like downloaded data.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import webdataset as wds

from .errors import DataError
from .role import parse_role
from .synth import GENERATOR_VERSION, SynthTask, generate
from .urls import expand_urls, require_shards
from .writer import encode_sample


@dataclass(frozen=True)
class EmbeddedDataset:
    task: SynthTask
    train_shards: int
    test_shards: int
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.task.classes)


# Class ids index synth.CLASS_UNIVERSE; the ranges are disjoint so no two tasks share a
# class, while all of them share the primitive bank. Sizes keep the demo (pretrain,
# transfer, dispose, attack) within minutes on two CPU cores.
EMBEDDED: dict[str, EmbeddedDataset] = {
    "synth_source": EmbeddedDataset(
        SynthTask(classes=tuple(range(0, 20)), train_per_class=200, test_per_class=50, seed=101),
        train_shards=4, test_shards=2, description="pretraining task: 20 classes covering the whole primitive bank",
    ),
    "synth_target": EmbeddedDataset(
        SynthTask(classes=tuple(range(20, 30)), train_per_class=20, test_per_class=50, seed=202),
        train_shards=2, test_shards=2, description="small transfer task: 10 new classes, 20 train images each",
    ),
    "synth_piggyback": EmbeddedDataset(
        SynthTask(classes=tuple(range(30, 40)), train_per_class=60, test_per_class=50, seed=303),
        train_shards=2, test_shards=2, description="attacker's task: 10 more classes from the same bank",
    ),
    "synth_tiny": EmbeddedDataset(
        SynthTask(classes=tuple(range(40, 44)), train_per_class=12, test_per_class=6, seed=404),
        train_shards=2, test_shards=2, description="unit-test task: 4 classes, 48 train / 24 test images",
    ),
}


def get_embedded(name: str) -> EmbeddedDataset:
    if name not in EMBEDDED:
        raise DataError(f"unknown embedded dataset {name!r}: use one of {', '.join(sorted(EMBEDDED))}")
    return EMBEDDED[name]


@contextmanager
def _exclusive(lock_path: str):
    # flock serialises generators across processes (ranks) on this host and on file
    # systems that support it; the lock is released when the file is closed, even if
    # the holder dies.
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_split(dataset: EmbeddedDataset, split: str, urls: list[str], image_size: int) -> list[tuple[str, str]]:
    """Write one split's samples spread evenly over ``urls`` into temp files; return (temp, final) pairs."""
    images, labels = generate(dataset.task, split, size=image_size)
    moves = []
    for url, rows in zip(urls, np.array_split(np.arange(len(labels)), len(urls))):
        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
        temp = f"{url}.tmp-{os.getpid()}"
        # mtime=0 makes the tar bytes a pure function of the dataset and seed.
        with wds.TarWriter(temp, mtime=0) as sink:
            for i in rows:
                sink.write(encode_sample(f"{i:06d}", images[i], int(labels[i])))
        moves.append((temp, url))
    return moves


def _stamp_path(name: str, train_urls: list[str]) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(train_urls[0])), f".{name}.embedded.json")


def _complete(name: str, urls: list[str], stamp_path: str, stamp: dict) -> bool:
    """All shards exist and were not written by a different generator version or size.

    Shards without a stamp (copied elsewhere, say) are trusted; a stamp that disagrees
    means the generator changed since they were written.
    """
    if not all(os.path.isfile(url) for url in urls):
        return False
    try:
        with open(stamp_path) as f:
            return json.load(f) == stamp
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False


def materialize(name: str, train_urls: list[str], test_urls: list[str], image_size: int = 32) -> bool:
    """Generate embedded dataset ``name`` into exactly these shard paths unless they are complete.

    Safe to call from several processes at once: one generates under a lock, into temp
    files renamed into place, and the others find the shards complete when they get
    the lock. Returns True if this call generated them.
    """
    dataset = get_embedded(name)
    urls = train_urls + test_urls
    stamp_path = _stamp_path(name, train_urls)
    stamp = {"name": name, "generator_version": GENERATOR_VERSION, "image_size": image_size,
             "train_shards": len(train_urls), "test_shards": len(test_urls)}
    if _complete(name, urls, stamp_path, stamp):
        return False
    lock_dir = os.path.dirname(stamp_path)
    try:
        os.makedirs(lock_dir, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {lock_dir} for embedded dataset {name!r} ({exc}): point the role's train/test patterns at a writable directory") from None
    with _exclusive(os.path.join(lock_dir, f".{name}.lock")):
        if _complete(name, urls, stamp_path, stamp):
            return False
        moves = _write_split(dataset, "train", train_urls, image_size) + _write_split(dataset, "test", test_urls, image_size)
        for temp, final in moves:
            os.replace(temp, final)
        temp = f"{stamp_path}.tmp-{os.getpid()}"
        with open(temp, "w") as f:
            json.dump(stamp, f)
        os.replace(temp, stamp_path)
    return True


def ensure_role_shards(role) -> None:
    """Make sure a role's shards exist: generate embedded ones if missing, else check them."""
    spec = parse_role(role)
    if spec.embedded:
        dataset = get_embedded(spec.embedded)
        if spec.num_classes != dataset.num_classes:
            raise DataError(f"role num_classes={spec.num_classes} but embedded dataset {spec.embedded!r} has {dataset.num_classes} classes: set num_classes: {dataset.num_classes}")
        materialize(spec.embedded, expand_urls(spec.train), expand_urls(spec.test), spec.image_size)
    require_shards(spec.train)
    require_shards(spec.test)
