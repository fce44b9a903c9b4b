"""Who runs a stage: its directory's owner.json, created atomically by the job that trains it (the job id, the
host, the process), and whether that job is still alive. A second job for the same stage (a second submission
of the experiment, a resubmission while the first still runs) waits for the owner instead of training beside it,
and takes over once the owner is gone; launch/status.py reads the same file to tell a running stage from one
whose job died."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from trd.atomic import atomic_write_json
from trd.slurm import FINAL_STATES, job_state

OWNER_FILE = "owner.json"


def this_job() -> dict:
    """The identity of the job this process belongs to (all ranks of one job share job_id)."""
    slurm = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        slurm = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"job_id": slurm or os.environ.get("TRD_JOB_ID") or f"pid{os.getpid()}", "slurm": slurm is not None,
            "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def read_owner(stage_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(stage_dir) / OWNER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def alive(owner: dict) -> bool:
    """Whether the owning job can still be running: its SLURM job is not in a final state, or its process on this
    host exists. A process on another host without SLURM cannot be checked: it counts as alive."""
    if owner.get("slurm"):
        state = job_state(owner["job_id"])
        return state is not None and state not in FINAL_STATES
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_acquire(stage_dir: str | Path, me: dict) -> dict | None:
    """Makes `me` the owner; returns None on success, else the live owner. An owner that is no longer alive, or
    that is this same job (requeued by SLURM), is replaced. The check and the write happen under an exclusive
    flock, so of two jobs that start at once exactly one becomes the owner."""
    stage_dir = Path(stage_dir)
    with open(stage_dir / f".{OWNER_FILE}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            owner = read_owner(stage_dir)
            if owner is not None and owner.get("job_id") != me["job_id"] and alive(owner):
                return owner
            atomic_write_json(stage_dir / OWNER_FILE, me)
            return None
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def release(stage_dir: str | Path, me: dict) -> None:
    owner = read_owner(stage_dir)
    if owner is not None and owner.get("job_id") == me["job_id"] and owner.get("pid") == me["pid"]:
        (Path(stage_dir) / OWNER_FILE).unlink(missing_ok=True)
