"""Multi-rank / multi-worker behaviour, simulated by passing rank and world_size."""

import warnings
from collections import Counter

import pytest
import torch
from shard_ids import epoch_ids, id_role

from trd.data import build_loader

# Uneven shard sizes: under any shard assignment the two ranks hold different sample counts.
UNEVEN = [30, 5, 17, 9, 22, 3, 11, 13]


@pytest.fixture
def uneven_role(tmp_path):
    return id_role(tmp_path, UNEVEN, test_counts=[7, 1, 12, 5, 9])


def rank_loaders(role, *, batch_size=4, world_size=2, num_workers=0, train=True, seed=3, split="train"):
    return [build_loader(role, split, batch_size, train=train, seed=seed, rank=r, world_size=world_size, num_workers=num_workers)
            for r in range(world_size)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_rank_runs_the_same_number_of_full_batches(uneven_role, num_workers):
    loaders = rank_loaders(uneven_role, batch_size=4, num_workers=num_workers)
    total = sum(UNEVEN)
    assert all(l.num_samples == total for l in loaders)
    assert {l.steps_per_epoch for l in loaders} == {total // (2 * 4)}
    for epoch in (0, 1):
        for loader in loaders:
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == loader.steps_per_epoch
            assert all(images.shape == (4, 3, 8, 8) and labels.shape == (4,) for images, labels in batches)
            assert all(images.dtype == torch.float32 and labels.dtype == torch.int64 for images, labels in batches)


def test_ranks_see_disjoint_shards_within_an_epoch(uneven_role):
    loaders = rank_loaders(uneven_role, batch_size=4, num_workers=2)
    for epoch in (0, 1, 2):
        seen = []
        for loader in loaders:
            loader.set_epoch(epoch)
            seen.append({i for batch in epoch_ids(loader) for i in batch})
        assert seen[0] and seen[1] and not seen[0] & seen[1]
        # Shards are dealt out whole: a shard's samples all go to one rank.
        shard_of = {}
        start = 0
        for shard, count in enumerate(UNEVEN):
            shard_of.update({i: shard for i in range(start, start + count)})
            start += count
        assert not {shard_of[i] for i in seen[0]} & {shard_of[i] for i in seen[1]}


def test_order_changes_across_epochs_and_is_reproducible(uneven_role):
    loader = rank_loaders(uneven_role, world_size=1, num_workers=0)[0]
    again = rank_loaders(uneven_role, world_size=1, num_workers=0)[0]
    orders = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        again.set_epoch(epoch)
        orders[epoch] = epoch_ids(loader)
        assert orders[epoch] == epoch_ids(again)
    assert orders[0] != orders[1]
    other_seed = rank_loaders(uneven_role, world_size=1, seed=4)[0]
    assert epoch_ids(other_seed) != orders[0]


def test_single_rank_epoch_sees_each_sample_once(uneven_role):
    loader = build_loader(uneven_role, "train", 11, train=True, seed=5)
    ids = sum(epoch_ids(loader), [])
    assert len(ids) == loader.steps_per_epoch * 11 == sum(UNEVEN) // 11 * 11
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_iterator_equals_tail_of_full_epoch(uneven_role, num_workers):
    for rank, loader in enumerate(rank_loaders(uneven_role, batch_size=3, num_workers=num_workers)):
        loader.set_epoch(1)
        full = list(loader)
        for start in (0, 1, 4, loader.steps_per_epoch - 1, loader.steps_per_epoch):
            tail = list(loader.iter_from(start))
            assert len(tail) == len(full) - start
            for (images, labels), (want_images, want_labels) in zip(tail, full[start:]):
                assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_resume_with_augmentation_repeats_the_same_crops(tmp_path):
    role = id_role(tmp_path, [12, 12, 12], augment=True)
    loader = build_loader(role, "train", 4, train=True, seed=1, num_workers=2)
    loader.set_epoch(2)
    full = list(loader)
    tail = list(loader.iter_from(5))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(tail, full[5:])) and len(tail) == len(full) - 5


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("batch_size", [2, 5])
def test_eval_loaders_see_every_sample_exactly_once_across_ranks(uneven_role, num_workers, batch_size):
    loaders = rank_loaders(uneven_role, batch_size=batch_size, num_workers=num_workers, train=False, split="test")
    counts = Counter()
    for loader in loaders:
        batches = epoch_ids(loader)
        assert len(batches) == loader.steps_per_epoch
        counts.update(i for batch in batches for i in batch)
        assert list(loader) and all(len(b) <= batch_size for b in batches)
    assert counts == Counter(range(7 + 1 + 12 + 5 + 9))


def test_eval_order_is_fixed_and_unaugmented(tmp_path):
    role = id_role(tmp_path, [10], test_counts=[6, 6], augment=True)
    loader = build_loader(role, "test", 4, train=False, seed=1)
    first = epoch_ids(loader)
    loader.set_epoch(3)
    assert epoch_ids(loader) == first == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_fewer_shards_than_ranks_times_workers_splits_by_sample(tmp_path):
    role = id_role(tmp_path, [20, 7], test_counts=[9])
    with pytest.warns(UserWarning, match="splitting by sample"):
        loaders = rank_loaders(role, batch_size=3, num_workers=2)
    assert {l.steps_per_epoch for l in loaders} == {27 // 6}
    seen = []
    for loader in loaders:
        loader.set_epoch(1)
        batches = epoch_ids(loader)
        assert len(batches) == loader.steps_per_epoch and all(len(b) == 3 for b in batches)
        seen.append(set(sum(batches, [])))
        tail = epoch_ids(loader, 2)
        assert tail == batches[2:]
    assert not seen[0] & seen[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evals = rank_loaders(role, batch_size=2, num_workers=2, train=False, split="test")
    assert sorted(i for l in evals for b in epoch_ids(l) for i in b) == list(range(9))


@pytest.mark.filterwarnings("ignore:.*splitting by sample")
def test_split_smaller_than_one_global_batch_still_yields_a_step(tmp_path):
    role = id_role(tmp_path, [3])
    loaders = rank_loaders(role, batch_size=4, num_workers=0)
    for loader in loaders:
        batches = epoch_ids(loader)
        assert loader.steps_per_epoch == 1 and len(batches) == 1 and len(batches[0]) == 4
