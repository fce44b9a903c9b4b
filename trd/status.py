"""An experiment's state, read from its plan.json and each stage's metrics.json / job.json (and, for SLURM
jobs that ended without finishing their stage, slurmctld's record of why)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from trd.engine.atomic import read_json
from trd.metrics import read_metrics

# SLURM states after which a job will not run again (REQUEUED and PREEMPTED are not final).
SLURM_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                         "DEADLINE"})


def slurm_job(job_id: str) -> dict[str, str]:
    """slurmctld's record of a job or array task (JobState, Reason, Dependency, ...); {} once it has forgotten
    the job (MinJobAge) or without SLURM commands.

    submitit asks sacct, which fails on clusters without accounting storage and then never reports a
    cancelled job as done; scontrol reads slurmctld itself.
    """
    if shutil.which("scontrol") is None:
        return {}
    proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {}
    return dict(re.findall(r"(\w[\w:/]*)=(\S*)", proc.stdout.splitlines()[0]))


def _ended_unfinished(job: dict) -> tuple[str, str] | None:
    """(status, error) for a SLURM job that will not run again although its stage is not done: its python
    never wrote an outcome (cancelled, killed for memory or time, node failure)."""
    if job.get("launcher") != "slurm" or job.get("job_id") is None:
        return None
    info = slurm_job(job["job_id"])
    state = info.get("JobState")
    if state not in SLURM_FINAL:
        return None
    reason = info.get("Reason", "None")
    if state == "CANCELLED":
        if reason == "DependencyNeverSatisfied":
            return "not run", f"SLURM job {job['job_id']} cancelled: an input stage failed ({info.get('Dependency')})"
        return "cancelled", f"SLURM job {job['job_id']} was cancelled"
    return "failed", f"SLURM job {job['job_id']} ended {state} (reason {reason}) before its stage finished"


def stage_rows(exp_dir: str | Path) -> list[dict]:
    plan = read_json(Path(exp_dir) / "plan.json")
    if plan is None:
        raise FileNotFoundError(f"{exp_dir} has no plan.json: is it an experiment directory of launch/submit.py?")
    rows = []
    for name, stage in plan["stages"].items():
        metrics = read_metrics(stage["dir"])
        job = read_json(Path(stage["dir"]) / "job.json", default={})
        status, error = metrics.get("status", "pending"), metrics.get("error")
        if status in ("pending", "running"):
            status, error = _ended_unfinished(job) or (status, error)
        rows.append({
            "stage": name, "kind": stage["kind"], "status": status,
            "acc": metrics.get("acc", {}), "dir": stage["dir"], "job_id": job.get("job_id"),
            "log": metrics.get("log") or job.get("stderr"), "error": error,
        })
    return rows


def format_status(rows: list[dict]) -> str:
    lines = []
    width = max((len(r["stage"]) for r in rows), default=5)
    for r in rows:
        acc = " ".join(f"{k}={v:.4f}" for k, v in sorted(r["acc"].items()) if isinstance(v, float))
        line = f"  {r['stage']:<{width}}  {r['status']:<8}  {acc}".rstrip()
        if r["status"] in ("failed", "diverged"):
            line += f"\n  {'':<{width}}  {r['error'] or ''}\n  {'':<{width}}  log: {r['log']}"
        elif r["status"] in ("not run", "cancelled"):
            line += f"\n  {'':<{width}}  {r['error']}"
        lines.append(line)
    return "\n".join(lines)
