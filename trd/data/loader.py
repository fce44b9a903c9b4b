"""ShardLoader: the epoch-aware loader every trd stage trains and evaluates with."""

from __future__ import annotations

import warnings

import torch
import webdataset as wds

from .catalog import Catalog, build_catalog
from .embedded import ensure_role_shards
from .errors import DataError
from .plan import eval_batches, plan_rank, splits_by_shard, train_steps
from .role import RoleSpec, parse_role
from .stream import EpochStream


class ShardLoader:
    """Batches of one split for one rank.

    Train loaders yield exactly ``steps_per_epoch`` batches on every rank (ranks whose
    shards run out wrap around) so collective ops never wait on a rank that stopped.
    The order is a pure function of (seed, epoch, rank, world_size, num_workers);
    call ``set_epoch`` before each epoch, like a DistributedSampler.
    Eval loaders yield every sample of the split exactly once across all ranks.
    """

    def __init__(
        self,
        spec: RoleSpec,
        catalog: Catalog,
        *,
        split: str,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int,
        skip_corrupt: bool,
    ):
        self.spec, self.catalog, self.split = spec, catalog, split
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.skip_corrupt = skip_corrupt
        self.epoch = 0
        self.corrupt_skipped = catalog.corrupt_skipped
        self.num_samples = catalog.num_samples
        if train:
            self.steps_per_epoch = train_steps(self.num_samples, batch_size, world_size)
        else:
            self.steps_per_epoch = eval_batches(self._plans(0), batch_size)
        if not splits_by_shard(len(catalog.urls), world_size, num_workers):
            warnings.warn(
                f"{split} split of '{spec.pattern(split)}' has {len(catalog.urls)} shards for {world_size} ranks x "
                f"{max(1, num_workers)} workers; splitting by sample instead (every worker reads every shard): "
                "write more, smaller shards (make_shards.py --maxcount) to avoid the extra reading",
                stacklevel=3,
            )

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _plans(self, epoch: int):
        return plan_rank(
            self.catalog.counts,
            train=self.train,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=self.num_workers,
        )

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_step: int):
        """This epoch's batches from batch ``start_step`` on, exactly as an uninterrupted iterator yields them."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise DataError(f"start_step={start_step} is outside [0, {self.steps_per_epoch}] (steps_per_epoch of this loader)")
        if start_step and not self.train:
            raise DataError("iter_from(start_step > 0) is for train loaders; evaluation always runs a whole split")
        stream = EpochStream(
            catalog=self.catalog,
            plans=self._plans(self.epoch),
            spec=self.spec,
            batch_size=self.batch_size,
            train=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            steps=self.steps_per_epoch,
            start_step=start_step,
            skip_corrupt=self.skip_corrupt,
        )
        return self._unwrap(stream)

    def _unwrap(self, stream: EpochStream):
        if self.num_workers > 0:
            # batch_size=None: batches are built inside the workers; the DataLoader
            # collects them round-robin from workers 0, 1, ..., which the plan relies on.
            batches = wds.WebLoader(stream, batch_size=None, num_workers=self.num_workers,
                                    pin_memory=torch.cuda.is_available())
        else:
            batches = stream
        for images, labels, skipped, error in batches:
            for message in skipped:
                warnings.warn(message, stacklevel=2)
            self.corrupt_skipped += len(skipped)
            if error is not None:
                raise DataError(error)
            if images is not None:
                yield images, labels


def build_loader(
    role,
    split: str,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    skip_corrupt: bool = False,
) -> ShardLoader:
    """Loader for ``split`` ('train' or 'test') of a dataset role node.

    Generates the role's embedded shards first if it names one and they are missing.
    """
    spec = parse_role(role)
    spec.pattern(split)
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be >= 1")
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"rank={rank} must be in [0, world_size={world_size})")
    if num_workers < 0:
        raise DataError(f"num_workers={num_workers} must be >= 0")
    if spec.embedded:
        ensure_role_shards(role)
    catalog = build_catalog(spec, split, skip_corrupt)
    return ShardLoader(
        spec,
        catalog,
        split=split,
        batch_size=batch_size,
        train=train,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        skip_corrupt=skip_corrupt,
    )
