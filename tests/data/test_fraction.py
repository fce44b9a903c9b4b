"""Class-balanced, deterministic ``fraction`` subsets of the train split."""

import os
from collections import Counter

import numpy as np
import webdataset as wds
from shard_ids import epoch_ids, id_image

from trd.data import build_loader
from trd.data.catalog import balanced_subset

# Class c has 10 * (c + 1) samples: deliberately imbalanced.
LABELS = [c for c in range(5) for _ in range(10 * (c + 1))]


def imbalanced_role(tmp_path, **extra):
    order = np.random.default_rng(0).permutation(len(LABELS))
    for split, ids in (("train", order), ("test", order[:20])):
        chunks = np.array_split(ids, 4)
        for shard, chunk in enumerate(chunks):
            with wds.TarWriter(str(tmp_path / f"{split}-{shard:06d}.tar")) as sink:
                for i in chunk:
                    sink.write({"__key__": f"s{i:05d}", "png": id_image(int(i)), "cls": LABELS[i]})
    return {"train": os.path.join(tmp_path, "train-{000000..000003}.tar"), "test": os.path.join(tmp_path, "test-{000000..000003}.tar"),
            "num_classes": 5, "image_size": 8, "augment": False, **extra}


def selected_ids(role, **kwargs):
    loader = build_loader(role, "train", 4, train=False, **kwargs)
    ids = [i for batch in epoch_ids(loader) for i in batch]
    assert len(ids) == len(set(ids))
    if kwargs.get("world_size", 1) == 1:
        assert len(ids) == loader.num_samples
    return ids


def test_fraction_keeps_round_fraction_of_every_class(tmp_path):
    role = imbalanced_role(tmp_path, fraction=0.1)
    ids = selected_ids(role)
    assert Counter(LABELS[i] for i in ids) == {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}


def test_tiny_fraction_keeps_at_least_one_per_class(tmp_path):
    role = imbalanced_role(tmp_path, fraction=0.01)
    assert Counter(LABELS[i] for i in selected_ids(role)) == {c: 1 for c in range(5)}


def test_fraction_is_deterministic_by_fraction_seed_only(tmp_path):
    role = imbalanced_role(tmp_path, fraction=0.2, fraction_seed=7)
    first = set(selected_ids(role))
    assert first == set(selected_ids(role))
    # Neither the loader seed nor the rank layout changes which samples are in the subset.
    across_ranks = [i for r in range(2) for i in selected_ids(role, rank=r, world_size=2, seed=11)]
    assert set(across_ranks) == first and len(across_ranks) == len(first)
    other = set(selected_ids({**role, "fraction_seed": 8}))
    assert other != first and len(other) == len(first)


def test_train_loader_streams_only_the_subset(tmp_path):
    role = imbalanced_role(tmp_path, fraction=0.2)
    subset = set(selected_ids(role))
    loader = build_loader(role, "train", 4, train=True, seed=2, rank=1, world_size=2, num_workers=2)
    assert loader.num_samples == len(subset) == 30 and loader.steps_per_epoch == 30 // 8
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        assert {i for batch in epoch_ids(loader) for i in batch} <= subset


def test_fraction_does_not_touch_the_test_split(tmp_path):
    role = imbalanced_role(tmp_path, fraction=0.1)
    assert build_loader(role, "test", 8, train=False).num_samples == 20


def test_fraction_one_keeps_everything(tmp_path):
    role = imbalanced_role(tmp_path, fraction=1.0)
    assert sorted(selected_ids(role)) == list(range(len(LABELS)))


def test_balanced_subset_per_class_draw_is_independent_of_other_classes():
    labels = np.array([0] * 50 + [1] * 50)
    with_other = balanced_subset(labels, 0.3, seed=3)
    alone = balanced_subset(labels[:50], 0.3, seed=3)
    assert np.array_equal(with_other[:50], alone)
    assert with_other.sum() == 30
