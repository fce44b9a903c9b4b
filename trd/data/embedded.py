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

from trd.atomic import file_sha256

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
    # Classes 0-9 are built from gratings, bars and an upright cross only (primitives 0-8), classes 10-19 from
    # checkers, rings, disc, annulus, diagonal cross and chevron only (9-17): two class groups a network can tell
    # apart by what they are made of, unlike synth_source's two halves, which share 16 of the 18 primitives. Taken
    # from CLASS_UNIVERSE beyond the other tasks' ranges (ids 44-127).
    "synth_split": EmbeddedDataset(
        SynthTask(classes=(44, 46, 52, 53, 57, 63, 65, 66, 71, 75, 47, 49, 51, 61, 69, 72, 74, 78, 81, 82),
                  train_per_class=200, test_per_class=50, seed=505),
        train_shards=4, test_shards=2,
        description="two groups of 10 classes built from disjoint halves of the primitive bank (resistance demo)",
    ),
    "synth_tiny": EmbeddedDataset(
        SynthTask(classes=tuple(range(40, 44)), train_per_class=12, test_per_class=6, seed=404),
        train_shards=2, test_shards=2, description="unit-test task: 4 classes, 48 train / 24 test images",
    ),
}


def embedded_train_size(role: dict) -> int | None:
    """How many training images a role of embedded data keeps (after fraction, part and holdout), or None for other data."""
    dataset = EMBEDDED.get(role.get("embedded") or "")
    if dataset is None:
        return None
    per_class = dataset.task.train_per_class
    if role.get("fraction") is not None:
        per_class = max(1, int(per_class * float(role["fraction"]) + 0.5))
    size = per_class * dataset.num_classes
    low, high = role.get("part") or (0.0, 1.0)
    high = high - (high - low) * float(role.get("holdout") or 0.0)
    return int(high * size + 1e-9) - int(low * size + 1e-9)


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


def _read_stamp(stamp_path: str) -> dict | None:
    try:
        with open(stamp_path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _setting(stamp: dict) -> dict:
    return {k: v for k, v in stamp.items() if k != "files"}


def _complete(urls: list[str], stamp_path: str, setting: dict) -> bool:
    """All shards exist, and trd's stamp (if any) says they were written with this setting.

    Shards without a stamp (copied there, or a user's own) are read as they are and never rewritten."""
    if not all(os.path.isfile(url) for url in urls):
        return False
    stamp = _read_stamp(stamp_path)
    return stamp is None or _setting(stamp) == setting


def _check_ownership(name: str, directory: str, urls: list[str], stamp: dict | None, setting: dict) -> None:
    """trd generates an embedded dataset only into a directory that holds nothing but what trd itself wrote
    there for it (files listed, with their hashes, in its stamp), and never rewrites a setting in place."""
    owned = (stamp or {}).get("files", {})
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if entry in (os.path.basename(_stamp_path(name, urls)), f".{name}.lock") or ".tmp-" in entry:
            continue
        if entry not in owned or not os.path.isfile(path) or file_sha256(path) != owned[entry]:
            raise DataError(f"{path} is in {directory}, where trd would generate embedded dataset {name!r}, and trd "
                            f"did not write it: point the role's train/test patterns at a directory of their own, or "
                            f"drop the role's `embedded` key to read your shards as they are")
    if stamp and stamp.get("image_size") != setting["image_size"]:
        raise DataError(f"{directory} holds embedded dataset {name!r} generated at {stamp.get('image_size')} px; "
                        f"{setting['image_size']} px data goes to another directory: point the role's train/test "
                        f"patterns elsewhere (configs/data/embedded.yaml puts each image size in its own)")


def materialize(name: str, train_urls: list[str], test_urls: list[str], image_size: int = 32) -> bool:
    """Generate embedded dataset ``name`` into exactly these shard paths unless they are complete.

    Safe to call from several processes at once: one generates under a lock, into temp files renamed into
    place, and the others find the shards complete when they get the lock. Returns True if this call generated
    them. Files trd did not write are never overwritten (see _check_ownership).
    """
    dataset = get_embedded(name)
    urls = train_urls + test_urls
    stamp_path = _stamp_path(name, train_urls)
    directory = os.path.dirname(stamp_path)
    setting = {"name": name, "generator_version": GENERATOR_VERSION, "image_size": image_size,
               "train_shards": len(train_urls), "test_shards": len(test_urls)}
    if _complete(urls, stamp_path, setting):
        return False
    outside = [u for u in urls if os.path.dirname(os.path.abspath(u)) != directory]
    if outside:
        raise DataError(f"embedded dataset {name!r}: {outside[0]} is not in {directory} with the train shards: put "
                        f"every train and test shard of an embedded role in one directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {directory} for embedded dataset {name!r} ({exc}): point the role's "
                        f"train/test patterns at a writable directory") from None
    with _exclusive(os.path.join(directory, f".{name}.lock")):
        if _complete(urls, stamp_path, setting):
            return False
        _check_ownership(name, directory, urls, _read_stamp(stamp_path), setting)
        moves = _write_split(dataset, "train", train_urls, image_size) + _write_split(dataset, "test", test_urls, image_size)
        for temp, final in moves:
            os.replace(temp, final)
        temp = f"{stamp_path}.tmp-{os.getpid()}"
        with open(temp, "w") as f:
            json.dump({**setting, "files": {os.path.basename(u): file_sha256(u) for u in urls}}, f)
        os.replace(temp, stamp_path)
    return True


def ensure_role_shards(role) -> None:
    """Make sure a role's shards exist: generate embedded ones if missing, else check them."""
    spec = parse_role(role)
    if spec.embedded:
        dataset = get_embedded(spec.embedded)
        if spec.classes and max(spec.classes) >= dataset.num_classes:
            raise DataError(f"classes={spec.classes} but embedded dataset {spec.embedded!r} has labels 0..{dataset.num_classes - 1}: list labels it has")
        if not spec.classes and spec.num_classes != dataset.num_classes:
            raise DataError(f"role num_classes={spec.num_classes} but embedded dataset {spec.embedded!r} has {dataset.num_classes} classes: set num_classes: {dataset.num_classes}")
        materialize(spec.embedded, expand_urls(spec.train), expand_urls(spec.test), spec.image_size)
    require_shards(spec.train)
    require_shards(spec.test)
