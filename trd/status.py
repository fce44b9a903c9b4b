"""An experiment's state, read from its plan.json and each stage's metrics.json / job.json (and, for SLURM
jobs that ended without finishing their stage, slurmctld's record of why)."""
from __future__ import annotations

from pathlib import Path

from trd import contract
from trd.atomic import read_json
from trd.metrics import read_metrics
from trd.owner import alive, read_owner
from trd.slurm import FINAL_STATES, NEVER_STARTS, job_record

DIED = "died"  # metrics.json says running, but no live job owns the stage
FAILED_STATES = frozenset({contract.FAILED, contract.DIVERGED, DIED})  # ended without a result to use


def _ended_unfinished(job: dict) -> tuple[str, str] | None:
    """(status, error) for a SLURM job that will not run again although its stage is not done: its python
    never wrote an outcome (cancelled, killed for memory or time, node failure)."""
    if job.get("launcher") != "slurm" or job.get("job_id") is None:
        return None
    info = job_record(job["job_id"])
    state = info.get("JobState")
    if state not in FINAL_STATES:
        return None
    reason = info.get("Reason", "None")
    if state == "CANCELLED":
        if reason == "DependencyNeverSatisfied":
            return "not run", f"SLURM job {job['job_id']} cancelled: an input stage failed ({info.get('Dependency')})"
        return "cancelled", f"SLURM job {job['job_id']} was cancelled"
    return "failed", f"SLURM job {job['job_id']} ended {state} (reason {reason}) before its stage finished"


def _liveness(stage_dir: str, job: dict, status: str) -> tuple[str, str | None] | None:
    """(status, note) when what metrics.json says is no longer true or needs SLURM's word: a running stage whose
    owning job is gone, a pending SLURM job and why it waits."""
    if status == contract.RUNNING:
        owner = read_owner(stage_dir)
        if owner is None or not alive(owner):
            return DIED, ("its job ended without writing a result (killed, out of memory or node failure): submit "
                          "the experiment again to resume it from its last checkpoint")
        return None
    if status == contract.PENDING and job.get("launcher") == "slurm" and job.get("job_id"):
        info = job_record(job["job_id"])
        if info.get("JobState") == "PENDING":
            reason = info.get("Reason", "None")
            note = f"SLURM job {job['job_id']} pending: {reason}"
            if reason in NEVER_STARTS:
                note += " (it can never start on this partition: cancel it and ask for fewer resources)"
            return contract.PENDING, note
    return None


def read_plan(exp_dir: str | Path) -> dict:
    plan = read_json(Path(exp_dir) / contract.PLAN_FILE)
    if plan is None:
        raise FileNotFoundError(f"{exp_dir} has no {contract.PLAN_FILE}: is it an experiment directory of "
                                f"launch/submit.py?")
    return plan


def stage_rows(exp_dir: str | Path) -> list[dict]:
    rows = []
    for name, stage in read_plan(exp_dir)["stages"].items():
        metrics = read_metrics(stage["dir"])
        job = read_json(Path(stage["dir"]) / contract.JOB_FILE, default={})
        status, error = metrics.get("status", contract.PENDING), metrics.get("error")
        if status in (contract.PENDING, contract.RUNNING):
            status, error = _ended_unfinished(job) or _liveness(stage["dir"], job, status) or (status, error)
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
        if r["status"] in FAILED_STATES:
            line += f"\n  {'':<{width}}  {r['error'] or ''}\n  {'':<{width}}  log: {r['log']}"
        elif r["status"] in ("not run", "cancelled", contract.PENDING) and r["error"]:
            line += f"\n  {'':<{width}}  {r['error']}"
        lines.append(line)
    return "\n".join(lines)
