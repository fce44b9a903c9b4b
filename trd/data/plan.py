"""The order of an epoch as a pure function of (seed, epoch, rank, world_size, num_workers).

Nothing here reads data: given per-shard sample counts, it decides which shards each
(rank, worker) reads, how many batches each yields, and how a resumed iterator maps
DataLoader workers onto the batches still to come. Resuming mid-epoch is exact because
all of this (and every RNG downstream) is derived from these integers alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 64-bit seed from integer parts; distinct tuples give unrelated streams."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0])


@dataclass(frozen=True)
class WorkerPlan:
    """What one logical worker of one rank reads and yields during one epoch."""

    shard_ids: tuple[int, ...]  # indices into the catalog's shards, in read order
    # Sample-split mode (too few shards): the stream is cut into blocks of ``units``
    # positions and this worker keeps one position per block. Shard mode: units=1.
    units: int
    unit: int
    # Train: each block's position is drawn from a generator with this seed, shared by all
    # ranks, so strided patterns in the data (e.g. class-interleaved shards) cannot give a
    # worker a biased subset. Eval (None): the fixed position ``unit`` of every block.
    slot_seed: int | None
    cycle: bool  # train streams wrap around their shards until they have enough samples
    num_samples: int  # samples this worker yields in the epoch
    first_batch: int  # global batch index of this worker's first batch within the rank
    batch_step: int  # global batch indices advance by this much (the number of workers)


def epoch_shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    order = list(range(num_shards))
    if shuffle:
        # Same on every rank: depends on nothing rank-specific.
        random.Random(derive_seed(seed, epoch, 0x5A4D)).shuffle(order)
    return order


def splits_by_shard(num_shards: int, world_size: int, num_workers: int) -> bool:
    """Shards can be dealt out whole only when every (rank, worker) gets at least one."""
    return num_shards >= world_size * max(1, num_workers)


def train_steps(num_samples: int, batch_size: int, world_size: int) -> int:
    # At least one step, so a split smaller than one global batch still trains (by wrapping).
    return max(1, num_samples // (world_size * batch_size))


def plan_rank(
    counts: tuple[int, ...],
    *,
    train: bool,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    num_workers: int,
) -> list[WorkerPlan]:
    """One WorkerPlan per logical worker of ``rank``.

    Train: batches of the rank are numbered 0..steps-1 and worker w yields those with
    index = w (mod workers), which is the order in which a DataLoader collects batches
    from its workers. Eval: each worker yields all of its samples once.
    """
    workers = max(1, num_workers)
    units = world_size * workers
    order = epoch_shard_order(len(counts), seed, epoch, shuffle=train)
    total = sum(counts)
    steps = train_steps(total, batch_size, world_size) if train else 0
    plans = []
    for w in range(workers):
        unit = rank + world_size * w
        if splits_by_shard(len(counts), world_size, num_workers):
            # split_by_node then split_by_worker, as webdataset deals shards out.
            shard_ids = tuple(order[unit::units])
            plan_units, plan_unit = 1, 0
            available = sum(counts[i] for i in shard_ids)
        else:
            shard_ids = tuple(order)
            plan_units, plan_unit = units, unit
            available = len(range(unit, total, units))
        slot_seed = derive_seed(seed, epoch, 0x510) if train and plan_units > 1 else None
        if train:
            needed = len(range(w, steps, workers)) * batch_size
        else:
            needed = available
        plans.append(WorkerPlan(shard_ids, plan_units, plan_unit, slot_seed, train, needed, w, workers))
    return plans


def owned_slots(plan: WorkerPlan, chunk: int = 1024):
    """For each block of ``plan.units`` stream positions, the one this worker keeps."""
    if plan.slot_seed is None:
        while True:
            yield plan.unit
    rng = np.random.default_rng(plan.slot_seed)
    while True:
        # Row b is a permutation of the units: unit u owns slot perm[b, u] of block b.
        perms = rng.permuted(np.tile(np.arange(plan.units), (chunk, 1)), axis=1)
        yield from perms[:, plan.unit].tolist()


def eval_batches(plans: list[WorkerPlan], batch_size: int) -> int:
    return sum(math.ceil(p.num_samples / batch_size) for p in plans)


def resumed_assignment(start_step: int, steps: int, workers: int, dataloader_worker: int) -> tuple[int, int, int]:
    """For DataLoader worker ``j`` of an iterator resumed at ``start_step``.

    The DataLoader asks worker 0 first, so worker j must produce global batch
    start_step + j, then + workers, ... Returns (logical worker, batches of that
    logical worker's sequence to skip, batches to yield).
    """
    first = start_step + dataloader_worker
    logical = first % workers
    skip = (first - logical) // workers
    return logical, skip, len(range(first, steps, workers))
