"""An attack's tally over a test set resumes where a killed job left it: the batches counted before are skipped
and the totals equal an uninterrupted run's."""
from __future__ import annotations

import pytest
import torch

from trd.engine.tally import tally


class Batches:
    def __init__(self, n=7):
        g = torch.Generator().manual_seed(0)
        self.batches = [(torch.randn(4, 3, 2, 2, generator=g), torch.randint(0, 2, (4,), generator=g))
                        for _ in range(n)]

    def __iter__(self):
        return iter(self.batches)


def _count(seen):
    def count(b, images, labels):
        seen.append(b)
        return {"samples": labels.numel(), "ones": int(labels.sum()), "batch": b}
    return count


def test_a_killed_tally_resumes_after_its_last_saved_batch_and_ends_with_the_uninterrupted_totals(tmp_path):
    names = ["samples", "ones", "batch"]
    (tmp_path / "a").mkdir()
    seen = []
    whole = tally(Batches(), _count(seen), names, stage_dir=tmp_path / "a", rank=0, device=torch.device("cpu"),
                  save_every=2)
    assert seen == list(range(7)) and whole["samples"] == 28 and whole["batch"] == sum(range(7))

    (tmp_path / "b").mkdir()
    seen = []

    def dies_at_five(b, images, labels):
        if b == 5:
            raise KeyboardInterrupt
        return _count(seen)(b, images, labels)

    with pytest.raises(KeyboardInterrupt):
        tally(Batches(), dies_at_five, names, stage_dir=tmp_path / "b", rank=0, device=torch.device("cpu"),
              save_every=2)
    assert (tmp_path / "b" / "tally.rank0.json").exists()
    seen = []
    resumed = tally(Batches(), _count(seen), names, stage_dir=tmp_path / "b", rank=0, device=torch.device("cpu"),
                    save_every=2)
    assert seen == [4, 5, 6] and resumed == whole
    assert not (tmp_path / "b" / "tally.rank0.json").exists()
