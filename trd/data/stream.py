"""The per-epoch IterableDataset: reads a WorkerPlan's shards and yields finished batches.

It runs inside DataLoader workers (or in the main process with num_workers=0) and
yields (images, labels, skip_messages, error): what was skipped since the previous
batch travels with the batches, because a worker process can neither update the
loader's counter nor show a warning in the main process; a DataError travels the same
way, because the DataLoader would re-raise it wrapped in a worker traceback instead
of the one-line message.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from itertools import islice

import numpy as np
import torch
import webdataset as wds

from .augment import normalise, random_crop_flip
from .catalog import Catalog
from .decode import CorruptSample, decode_sample
from .errors import DataError
from .plan import WorkerPlan, derive_seed, owned_slots, resumed_assignment
from .role import RoleSpec


class EpochStream(torch.utils.data.IterableDataset):
    def __init__(
        self,
        *,
        catalog: Catalog,
        plans: list[WorkerPlan],
        spec: RoleSpec,
        batch_size: int,
        train: bool,
        seed: int,
        epoch: int,
        rank: int,
        steps: int,
        start_step: int,
        skip_corrupt: bool,
    ):
        super().__init__()
        self.catalog, self.plans, self.spec = catalog, plans, spec
        # A role with `classes` reads only those labels (the catalog drops the rest) and relabels them 0..k-1.
        self._relabel = {c: i for i, c in enumerate(spec.classes)} if spec.classes else {}
        self._label_limit = max(spec.classes) + 1 if spec.classes else spec.num_classes
        self.batch_size, self.train = batch_size, train
        self.seed, self.epoch, self.rank = seed, epoch, rank
        self.steps, self.start_step = steps, start_step
        self.skip_corrupt = skip_corrupt
        self._skipped: list[str] = []

    def _shard_samples(self, shard_id: int) -> Iterator[dict]:
        url, keep = self.catalog.urls[shard_id], self.catalog.keep[shard_id]
        seen: set[str] = set()
        try:
            for sample in wds.tarfile_samples(iter([{"url": url}])):
                key = sample["__key__"]
                # The index counted only the first of repeated keys; match it.
                if key in seen:
                    continue
                seen.add(key)
                if keep is None or key in keep:
                    yield sample
        except Exception as exc:
            message = f"shard {url} is corrupt or truncated ({type(exc).__name__}: {exc.args[0] if exc.args else exc})"
            if not self.skip_corrupt:
                raise DataError(message + ": re-create it with launch/make_shards.py, or pass skip_corrupt=True to skip it") from None
            self._skipped.append(message + "; skipped the rest of it (skip_corrupt=True)")

    def _ordered(self, plan: WorkerPlan, logical: int) -> Iterator[dict]:
        """The worker's raw samples in epoch order: pass after pass over its shards (train
        wraps around), each pass shuffled on its own so a pass is used up before the next
        one starts and an epoch repeats no sample it has not finished."""
        slots = owned_slots(plan)
        position, kept = 0, -1

        def one_pass():
            nonlocal position, kept
            for shard_id in plan.shard_ids:
                for sample in self._shard_samples(shard_id):
                    if position % plan.units == 0:
                        kept = next(slots)
                    if position % plan.units == kept:
                        yield sample
                    position += 1

        for repeat in itertools.count():
            start = position
            samples = one_pass()
            if self.train:
                rng = random.Random(derive_seed(self.seed, self.epoch, self.rank, logical, repeat, 0x5B))
                samples = wds.shuffle(self.spec.shuffle_buffer, initial=self.spec.shuffle_buffer, rng=rng)(samples)
            yield from samples
            if not plan.cycle:
                return
            if position == start:
                shards = ", ".join(self.catalog.urls[i] for i in plan.shard_ids[:3])
                raise DataError(f"shards {shards} yielded no usable samples although the index lists some: delete the index cache ($TRD_CACHE) and re-check the shards")

    def _decoded(self, raw: Iterator[dict]) -> Iterator[tuple[np.ndarray, int]]:
        for sample in raw:
            try:
                pixels, label = decode_sample(sample, self.spec.image_size, self._label_limit)
                yield pixels, self._relabel.get(label, label) if self._relabel else label
            except CorruptSample as exc:
                if not self.skip_corrupt:
                    raise
                self._skipped.append(f"{exc.problem}; skipped it (skip_corrupt=True)")

    def _finish(self, items: list[tuple[np.ndarray, int]], batch_index: int):
        images = torch.from_numpy(np.stack([pixels for pixels, _ in items])).permute(0, 3, 1, 2)
        labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        if self.train and self.spec.augment:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank, batch_index, 0xA6))
            images = random_crop_flip(images, generator)
        skipped, self._skipped = self._skipped, []
        return normalise(images.contiguous(), self.spec.mean, self.spec.std), labels, skipped, None

    def __iter__(self):
        try:
            yield from self._batches()
        except DataError as exc:
            yield None, None, self._skipped, str(exc)

    def _batches(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        workers = len(self.plans)
        if self.train:
            logical, skip_batches, num_batches = resumed_assignment(self.start_step, self.steps, workers, worker)
        else:
            logical, skip_batches = worker, 0
            num_batches = -(-self.plans[worker].num_samples // self.batch_size)
        raw = self._ordered(self.plans[logical], logical)
        plan = self.plans[logical]
        # Skipping happens before decoding: a resumed epoch only re-reads the bytes it skips.
        decoded = self._decoded(islice(raw, skip_batches * self.batch_size, None))
        for k in range(num_batches):
            items = list(islice(decoded, self.batch_size))
            if not items:
                break
            yield self._finish(items, plan.first_batch + (skip_batches + k) * plan.batch_step)
        if self._skipped and not self.train:
            # Skips after an eval stream's last batch still have to reach the main process.
            # (Train streams never read past their last batch, and an extra item would
            # break the DataLoader's round-robin order.)
            yield None, None, self._skipped, None
