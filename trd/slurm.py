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


# Pending reasons after which a job will never start as submitted (the request exceeds what the partition has).
NEVER_STARTS = frozenset({"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                          "ReqNodeNotAvail, UnavailableNodes", "AssocMaxCpuPerJobLimit", "QOSMaxCpuPerJobLimit"})


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


def _gpus(gres: str) -> int:
    """GPUs of a node from sinfo's %G ('gpu:a100:8(S:0-1),...'; '(null)' without any)."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def partition_capacity(partition: str | None) -> dict | None:
    """What the largest node of a partition (the default one for None) offers: cpus, mem_mb, gpus, and how many
    nodes it has; None without SLURM commands or when sinfo cannot answer."""
    if shutil.which("sinfo") is None:
        return None
    summary = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True)
    if summary.returncode != 0:
        return None
    names = summary.stdout.split()
    if partition is None:
        partition = next((n.rstrip("*") for n in names if n.endswith("*")), None)
        if partition is None:
            return None
    elif partition not in [n.rstrip("*") for n in names]:
        return {"partition": partition, "missing": True, "known": [n.rstrip("*") for n in names]}
    nodes = subprocess.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%m|%G"], capture_output=True, text=True)
    rows = [line.split("|") for line in nodes.stdout.splitlines() if line.count("|") == 3]
    if nodes.returncode != 0 or not rows:
        return None
    return {"partition": partition, "nodes": len({r[0] for r in rows}), "cpus": max(int(r[1]) for r in rows),
            "mem_mb": max(int(r[2].rstrip("+")) for r in rows), "gpus": max(_gpus(r[3]) for r in rows)}
