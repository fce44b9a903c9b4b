"""What a split contains after policy: usable samples per shard, the ``classes`` kept, the ``fraction`` subset,
the ``part`` slice, corrupt skips."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .index import ShardIndex, load_index
from .role import RoleSpec
from .urls import require_shards


@dataclass(frozen=True)
class Catalog:
    # Only shards that contribute samples, in pattern order.
    urls: tuple[str, ...]
    counts: tuple[int, ...]
    # Per shard: the keys to keep, or None for "every sample in the shard".
    keep: tuple[frozenset[str] | None, ...]
    corrupt_skipped: int

    @property
    def num_samples(self) -> int:
        return sum(self.counts)


def balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask keeping round(fraction * n_c) (at least 1) samples of every class c.

    Each class draws from its own generator seeded by (seed, c), so the subset of one
    class does not depend on how many other classes there are.
    """
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, int(np.floor(fraction * len(members) + 0.5)))
        rng = np.random.default_rng([seed, int(c)])
        mask[members[rng.permutation(len(members))[:take]]] = True
    return mask


def part_mask(kept: np.ndarray, part: list[float], seed: int) -> np.ndarray:
    """Boolean mask keeping, of the samples kept so far, positions [floor(a n), floor(b n)) of a permutation of
    them seeded by seed: slices with a shared seed and no overlap in [a, b) never share a sample."""
    index = np.flatnonzero(kept)
    order = index[np.random.default_rng([seed, 0x9A27]).permutation(len(index))]
    low, high = (int(np.floor(bound * len(index) + 1e-9)) for bound in part)
    mask = np.zeros(len(kept), dtype=bool)
    mask[order[low:high]] = True
    return mask


def _check_labels(index: ShardIndex, num_classes: int | None) -> None:
    """Every label in [0, num_classes); num_classes None (a role with `classes`): only non-negative."""
    labels = np.asarray(index.labels, dtype=np.int64)
    out = np.flatnonzero((labels < 0) | (labels >= (num_classes if num_classes is not None else np.inf)))
    if len(out):
        i = int(out[0])
        raise DataError(
            f"label {int(labels[i])} of sample '{index.keys[i]}' in shard {index.url} is outside [0, {num_classes}) "
            f"({len(out)} such samples in this shard): set num_classes to the dataset's class count or fix the shard's labels"
        )


def build_catalog(spec: RoleSpec, split: str, skip_corrupt: bool) -> Catalog:
    urls = require_shards(spec.pattern(split))
    indices = load_index(urls)
    corrupt = 0
    usable: list[ShardIndex] = []
    for index in indices:
        if index.error is not None:
            message = f"shard {index.url} is corrupt or truncated ({index.error})"
            if not skip_corrupt:
                raise DataError(message + ": re-create it with launch/make_shards.py, or pass skip_corrupt=True to skip it")
            warnings.warn(message + "; skipping it (skip_corrupt=True)", stacklevel=3)
            corrupt += 1
            continue
        if index.bad:
            key, reason = index.bad[0]
            message = f"sample '{key}' in shard {index.url}: {reason} ({len(index.bad)} bad samples in this shard)"
            if not skip_corrupt:
                raise DataError(message + ": fix the shard (each sample needs a unique key, an image and an integer 'cls') or pass skip_corrupt=True")
            warnings.warn(message + "; skipping them (skip_corrupt=True)", stacklevel=3)
            corrupt += len(index.bad)
        _check_labels(index, None if spec.classes else spec.num_classes)
        usable.append(index)

    labels = np.concatenate([np.asarray(s.labels, dtype=np.int64) for s in usable]) if usable else np.zeros(0, np.int64)
    mask = None
    if spec.classes:
        mask = np.isin(labels, spec.classes)
        absent = [c for c in spec.classes if not (labels == c).any()]
        if absent:
            raise DataError(f"classes {absent} of classes={spec.classes} have no sample in the {split} split "
                            f"'{spec.pattern(split)}': list labels the shards have")
    if split == "train" and spec.fraction is not None and spec.fraction < 1.0:
        # Per class with its own seed: the same subset of a class whichever other classes are kept.
        fraction = balanced_subset(labels, spec.fraction, spec.fraction_seed)
        mask = fraction if mask is None else mask & fraction
    if split == "train" and spec.train_part is not None:
        mask = part_mask(np.ones(len(labels), bool) if mask is None else mask, spec.train_part, spec.part_seed)
        if not mask.any():
            raise DataError(f"part={spec.train_part} of the {len(labels)} train samples of '{spec.train}' is empty: "
                            f"widen the slice")

    kept_urls, counts, keep = [], [], []
    start = 0
    for index in usable:
        n = len(index.keys)
        # Keys are only needed to filter the stream when something in the shard is dropped.
        if mask is not None:
            shard_mask = mask[start : start + n]
            chosen = frozenset(k for k, m in zip(index.keys, shard_mask) if m)
            count = len(chosen)
        elif index.bad:
            chosen, count = frozenset(index.keys), n
        else:
            chosen, count = None, n
        start += n
        if count:
            kept_urls.append(index.url)
            counts.append(count)
            keep.append(chosen)
    catalog = Catalog(tuple(kept_urls), tuple(counts), tuple(keep), corrupt)
    if catalog.num_samples == 0:
        raise DataError(f"split '{split}' ({spec.pattern(split)}) has no usable samples: check the shards with launch/make_shards.py")
    return catalog
