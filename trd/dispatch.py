"""Sends a plan's unfinished stages to submitit: one job per stage, one job array per fan-out.

SLURM: every wave is submitted at once, each array with `afterok` on the jobs of its inputs, and the call
returns (or waits, if asked). Local: submitit's local executor runs the same jobs on this machine, wave by
wave, since it has no dependencies of its own.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from trd.engine.atomic import atomic_write_json
from trd.metrics import DONE, read_metrics
from trd.plan import ConfigError, Plan, StageSpec, take
from trd.stages.runner import StageJob

LAUNCHER_KEYS = ("name", "wait", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "mem_gb",
                 "timeout_min", "max_num_timeout", "max_parallel", "partition", "account", "qos",
                 "array_parallelism", "setup", "additional", "poll_s", "signal_delay_s")


class LauncherError(RuntimeError):
    """The launcher cannot submit; the message names what is missing and the alternative."""


@dataclass
class Dispatch:
    jobs: dict[str, str] = field(default_factory=dict)  # stage name -> job id
    skipped: list[str] = field(default_factory=list)  # already done, reused
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # never started because an input failed


def _executor(launcher: Mapping, folder: Path):
    name = launcher["name"]
    tasks = int(launcher.get("tasks_per_node", 1))
    gpus = int(launcher.get("gpus_per_node", 0))
    if name == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=int(launcher["max_num_timeout"]))
        # Fractions of a minute are fine locally (tests exercise the timeout -> requeue path with them).
        ex.update_parameters(timeout_min=float(launcher["timeout_min"]), tasks_per_node=tasks, gpus_per_node=gpus,
                             signal_delay_s=int(launcher.get("signal_delay_s", 30)))
        return ex
    if name != "slurm":
        raise ConfigError(f"unknown launcher.name={name!r}: use launcher=local or launcher=slurm")
    for command in ("sbatch", "squeue", "scontrol"):
        if shutil.which(command) is None:
            raise LauncherError(f"launcher=slurm needs the SLURM command {command!r}, which is not on PATH: "
                                f"run on a SLURM login node, or use launcher=local")
    ex = submitit.SlurmExecutor(folder, max_num_timeout=int(launcher["max_num_timeout"]))
    params = {
        "job_name": "trd", "time": max(1, int(launcher["timeout_min"])), "nodes": int(launcher.get("nodes", 1)),
        "ntasks_per_node": tasks, "cpus_per_task": int(launcher.get("cpus_per_task", 1)),
        "gpus_per_node": gpus or None, "mem": f"{launcher['mem_gb']}GB" if launcher.get("mem_gb") else None,
        "partition": launcher.get("partition"), "account": launcher.get("account"), "qos": launcher.get("qos"),
        "array_parallelism": int(launcher.get("array_parallelism", 64)),
        "signal_delay_s": int(launcher.get("signal_delay_s", 120)), "setup": list(launcher.get("setup") or []),
    }
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def _record_job(spec: StageSpec, job) -> None:
    atomic_write_json(spec.dir / "job.json", {"job_id": job.job_id, "stdout": str(job.paths.stdout),
                                              "stderr": str(job.paths.stderr), "submitted": time.time()})


def _arrays(wave: list[StageSpec]) -> list[list[StageSpec]]:
    groups: dict[str, list[StageSpec]] = {}
    for spec in wave:
        groups.setdefault(spec.kind, []).append(spec)
    return list(groups.values())


def _submit_array(ex, group: list[StageSpec], dependency: list[str], launcher: Mapping):
    if launcher["name"] == "slurm":
        extra = dict(launcher.get("additional") or {})
        if dependency:
            extra["dependency"] = "afterok:" + ":".join(dependency)
            # A dependent whose input failed is cancelled at once, not left pending forever.
            extra["kill-on-invalid-dep"] = "yes"
        ex.update_parameters(additional_parameters=extra)
    jobs = ex.submit_array([StageJob(spec.dir) for spec in group])
    for spec, job in zip(group, jobs):
        _record_job(spec, job)
    return jobs


def _wait(jobs: dict[str, object], poll_s: float) -> None:
    pending = dict(jobs)
    while pending:
        for name, job in list(pending.items()):
            if job.done():
                pending.pop(name)
        if pending:
            time.sleep(poll_s)


def _classify(plan: Plan, names: list[str], result: Dispatch) -> None:
    """Finished jobs whose stage is not done failed, unless an input failed first (then they never ran)."""
    for name in names:  # plan order, so inputs are classified before their dependents
        if read_metrics(plan[name].dir).get("status") == DONE:
            continue
        if any(d in result.failed or d in result.not_run for d in plan[name].inputs.values()):
            result.not_run.append(name)
        else:
            result.failed.append(name)


def dispatch(plan: Plan, exp_dir: Path, launcher: Mapping, wait: bool | None = None) -> Dispatch:
    exp_dir = Path(exp_dir)
    launcher = take(launcher, LAUNCHER_KEYS, "launcher")
    wait = (launcher["name"] == "local") if wait is None else bool(wait)
    if launcher["name"] == "local" and not wait:
        raise ConfigError("launcher=local always waits for its jobs: drop launcher.wait=false")
    ex = _executor(launcher, exp_dir / "jobs" / "%j")
    result = Dispatch()
    submitted: dict[str, object] = {}
    poll_s = float(launcher.get("poll_s", 2.0))
    for wave in plan.waves():
        todo = []
        for spec in wave:
            if read_metrics(spec.dir).get("status") == DONE:
                result.skipped.append(spec.name)
            elif any(plan[d].name in result.failed + result.not_run for d in spec.inputs.values()):
                result.not_run.append(spec.name)
            else:
                todo.append(spec)
        for group in _arrays(todo):
            if launcher["name"] == "local":
                max_parallel = max(1, int(launcher.get("max_parallel", 1)))
                for start in range(0, len(group), max_parallel):
                    part = group[start:start + max_parallel]
                    jobs = _submit_array(ex, part, [], launcher)
                    _wait(dict(zip([s.name for s in part], jobs)), poll_s)
                    submitted.update(zip([s.name for s in part], jobs))
            else:
                deps = sorted({submitted[d].job_id for s in group for d in s.inputs.values() if d in submitted})
                submitted.update(zip([s.name for s in group], _submit_array(ex, group, deps, launcher)))
        if launcher["name"] == "local":
            _classify(plan, [s.name for s in todo], result)
    result.jobs = {name: job.job_id for name, job in submitted.items()}
    if wait and launcher["name"] != "local":
        _wait(submitted, poll_s)
        _classify(plan, list(submitted), result)
    atomic_write_json(exp_dir / "dispatch.json", {"jobs": result.jobs, "reused": result.skipped,
                                                  "failed": result.failed, "not_run": result.not_run})
    return result
