"""Runs shared by the SLURM tests of trd, and the teardown that leaves no job of theirs behind."""
from __future__ import annotations

import pytest
from slurm_cli import TWO_RANKS, cancel_unfinished, slurm_launcher, submit, track


@pytest.fixture(scope="session")
def slurm_jobs(slurm_cluster):
    """Every job id a test submits goes here; whatever is still queued or running at the end is cancelled
    (before the cluster fixture stops the daemons)."""
    ids: list[str] = []
    yield ids
    cancel_unfinished(ids)


@pytest.fixture(scope="session")
def two_rank_run(slurm_cluster, data_root, tmp_path_factory, slurm_jobs):
    out = tmp_path_factory.mktemp("slurm-2ranks")
    try:
        proc = submit(*TWO_RANKS, *slurm_launcher(slurm_cluster), "launcher.wait=true", f"out_root={out}",
                      cluster=slurm_cluster, data_root=data_root, timeout=400)
    finally:
        track(out / "demo", slurm_jobs)
    return out / "demo", proc
