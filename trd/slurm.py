"""What slurmctld says about a job: scontrol's record, read directly.

submitit asks sacct, which fails on clusters without accounting storage and then never reports a cancelled
job as done; scontrol reads slurmctld itself.
"""
from __future__ import annotations

import re
import shutil
import subprocess

# States after which a job will not run again (REQUEUED and PREEMPTED are not final).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                          "DEADLINE"})


def job_record(job_id: str) -> dict[str, str]:
    """slurmctld's record of a job or array task (JobState, Reason, Dependency, ...); {} once it has forgotten
    the job (MinJobAge) or without SLURM commands."""
    if shutil.which("scontrol") is None:
        return {}
    proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {}
    return dict(re.findall(r"(\w[\w:/]*)=(\S*)", proc.stdout.splitlines()[0]))


def job_state(job_id: str) -> str | None:
    """A job's state; None once slurmctld has forgotten it."""
    return job_record(job_id).get("JobState")
