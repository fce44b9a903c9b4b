"""A stage's owner: one job at a time, a dead owner replaced, the same (requeued) job taking its own place back."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from trd.owner import alive, read_owner, release, this_job, try_acquire


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_owner_at_a_time_and_a_dead_owner_is_replaced(tmp_path):
    me = this_job()
    assert try_acquire(tmp_path, me) is None and read_owner(tmp_path) == me
    other = {**me, "job_id": "other", "pid": os.getppid()}  # a live process that is not this one
    assert try_acquire(tmp_path, other) == me  # I am alive: the other job must wait
    release(tmp_path, other)  # not its lock to release
    assert read_owner(tmp_path) == me
    dead = {**me, "job_id": "dead", "pid": _dead_pid()}
    (tmp_path / "owner.json").write_text(json.dumps(dead))
    assert not alive(dead)
    assert try_acquire(tmp_path, other) is None and read_owner(tmp_path)["job_id"] == "other"


def test_a_requeued_job_takes_its_own_place_back_and_release_removes_only_its_own(tmp_path):
    me = this_job()
    before = {**me, "pid": os.getppid()}  # the same job id, as SLURM keeps it over a requeue
    (tmp_path / "owner.json").write_text(json.dumps(before))
    assert try_acquire(tmp_path, me) is None
    release(tmp_path, me)
    assert read_owner(tmp_path) is None


def test_an_owner_on_another_host_without_slurm_counts_as_alive():
    assert alive({"job_id": "x", "slurm": False, "host": "elsewhere", "pid": 1})
