"""Sends a plan's unfinished stages to submitit: one job per stage, one job array per fan-out.

SLURM: every wave is submitted at once, each array with `afterok` on the jobs of its inputs, and the call
returns (or waits, if asked). Local: submitit's local executor runs the same jobs on this machine, wave by
wave, since it has no dependencies of its own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from trd import contract
from trd.atomic import atomic_write_json, read_json
from trd.config import ConfigError, parse, plain
from trd.config.nodes import LauncherConfig
from trd.job import StageJob
from trd.metrics import read_metrics
from trd.plan import Plan, StageSpec
from trd.slurm import (
    FINAL_STATES,
    NEVER_STARTS,
    job_record,
    job_state,
    partition_capacity,
)


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
        if int(launcher.get("max_parallel", 1)) > 1:
            # Jobs side by side each take launcher.cpus_per_task threads (they inherit the variable), not every
            # core each: oversubscribed OpenMP threads cost far more than the parallelism gains.
            os.environ.setdefault("OMP_NUM_THREADS", str(int(launcher.get("cpus_per_task", 1))))
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
    check_fits(launcher)
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


def check_fits(launcher: Mapping) -> None:
    """Refuses, before anything is submitted, a request that no node of the partition can ever run (SLURM would
    keep it pending forever with reason PartitionConfig or similar)."""
    capacity = partition_capacity(launcher.get("partition"))
    if capacity is None:
        return
    if capacity.get("missing"):
        raise LauncherError(f"launcher.partition={launcher['partition']!r} is not a partition of this cluster: use one "
                            f"of {', '.join(capacity['known'])}")
    where = f"partition {capacity['partition']}"
    asked = [("launcher.nodes", int(launcher.get("nodes", 1)), capacity["nodes"], "nodes"),
             ("launcher.tasks_per_node x launcher.cpus_per_task",
              int(launcher.get("tasks_per_node", 1)) * int(launcher.get("cpus_per_task", 1)), capacity["cpus"],
              "CPUs on its largest node"),
             ("launcher.gpus_per_node", int(launcher.get("gpus_per_node", 0) or 0), capacity["gpus"],
              "GPUs on its largest node")]
    if launcher.get("mem_gb"):
        asked.append(("launcher.mem_gb", int(launcher["mem_gb"]) * 1024, capacity["mem_mb"], "MB on its largest node"))
    for key, want, have, what in asked:
        if want > have:
            shown = f"{want // 1024} GB" if key == "launcher.mem_gb" else want
            raise LauncherError(f"{key} asks for {shown}, but {where} has {have} {what}: such a job would stay pending "
                                f"forever; ask for at most that (or set launcher.partition)")


def _record_job(spec: StageSpec, job, launcher_name: str) -> None:
    atomic_write_json(spec.dir / contract.JOB_FILE, {"job_id": job.job_id, "launcher": launcher_name,
                                              "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                                              "submitted": time.time()})


def _arrays(wave: list[StageSpec]) -> list[list[StageSpec]]:
    groups: dict[str, list[StageSpec]] = {}
    for spec in wave:
        groups.setdefault(spec.kind, []).append(spec)
    return list(groups.values())


def _submit_array(ex, group: list[StageSpec], dependency: str | None, launcher: Mapping):
    if launcher["name"] == "slurm":
        extra = dict(launcher.get("additional") or {})
        if dependency:
            extra["dependency"] = dependency
            # A dependent whose input failed is cancelled at once, not left pending forever.
            extra["kill-on-invalid-dep"] = "yes"
        ex.update_parameters(additional_parameters=extra)
    jobs = ex.submit_array([StageJob(spec.dir) for spec in group])
    for spec, job in zip(group, jobs):
        _record_job(spec, job, launcher["name"])
    return jobs


def _slurm_arrays(group: list[StageSpec],
                  dependency_ids: Mapping[str, str]) -> list[tuple[list[StageSpec], str | None]]:
    """Splits a fan-out into arrays whose one SLURM dependency is exact for every task.

    All tasks of an array share one dependency: afterok on the union of their inputs' jobs would hold
    (and on failure cancel) a task for an input it does not have, e.g. every sweep point's evaluation
    when one point's transfer diverged. Task i depending on task i of one upstream array is aftercorr;
    otherwise tasks are grouped by identical inputs.
    """
    deps = [tuple(sorted({dependency_ids[d] for d in s.inputs.values() if d in dependency_ids})) for s in group]
    if len(group) > 1 and all(len(d) == 1 for d in deps):
        upstream = deps[0][0].split("_")[0]
        if [d[0] for d in deps] == [f"{upstream}_{i}" for i in range(len(group))]:
            return [(group, f"aftercorr:{upstream}")]
    parts: dict[tuple[str, ...], list[StageSpec]] = {}
    for spec, dep in zip(group, deps):
        parts.setdefault(dep, []).append(spec)
    return [(part, "afterok:" + ":".join(dep) if dep else None) for dep, part in parts.items()]


def _job_finished(launcher_name: str, job) -> bool:
    if launcher_name == "local":
        return job.done()
    state = job_state(job.job_id)
    return state is None or state in FINAL_STATES


def _active_slurm_job(spec: StageSpec) -> str | None:
    """The job of an earlier submission that is still queued or running this stage, if any."""
    job = read_json(spec.dir / contract.JOB_FILE, default={})
    job_id = job.get("job_id")
    if job_id is None or job.get("launcher", "slurm") != "slurm":  # a local job's id is a process id
        return None
    state = job_state(job_id)
    return job_id if state is not None and state not in FINAL_STATES else None


def _wait(jobs: dict[str, object], launcher_name: str, poll_s: float,
          on_poll: Callable[[], None] | None = None) -> None:
    pending = dict(jobs)
    while pending:
        for name, job in list(pending.items()):
            if _job_finished(launcher_name, job):
                pending.pop(name)
            elif launcher_name == "slurm":
                _stop_if_never_starts(name, job.job_id)
        if on_poll is not None:
            on_poll()
        if pending:
            time.sleep(poll_s)


def _stop_if_never_starts(name: str, job_id: str) -> None:
    record = job_record(job_id)
    if record.get("JobState") == "PENDING" and record.get("Reason") in NEVER_STARTS:
        raise LauncherError(f"SLURM says job {job_id} (stage {name}) can never start ({record['Reason']}): cancel "
                            f"the experiment's jobs with scancel and submit again with fewer resources or another "
                            f"launcher.partition")


def _classify(plan: Plan, names: list[str], result: Dispatch) -> None:
    """Finished jobs whose stage is not done failed, unless an input failed first (then they never ran)."""
    for name in names:  # plan order, so inputs are classified before their dependents
        if read_metrics(plan[name].dir).get("status") == contract.DONE:
            continue
        if any(d in result.failed or d in result.not_run for d in plan[name].inputs.values()):
            result.not_run.append(name)
        else:
            result.failed.append(name)


def _todo(wave: list[StageSpec], plan: Plan, result: Dispatch) -> list[StageSpec]:
    todo = []
    for spec in wave:
        if read_metrics(spec.dir).get("status") == contract.DONE:
            result.skipped.append(spec.name)
        elif any(d in result.failed or d in result.not_run for d in spec.inputs.values()):
            result.not_run.append(spec.name)
        else:
            todo.append(spec)
    return todo


def _run_local(plan: Plan, ex, launcher: Mapping, result: Dispatch,
               on_poll: Callable[[], None] | None) -> dict[str, object]:
    """Wave by wave, at most max_parallel jobs at a time: the next stage of a wave starts as soon as a slot frees."""
    submitted: dict[str, object] = {}
    max_parallel = max(1, int(launcher.get("max_parallel", 1)))
    for wave in plan.waves():
        todo = _todo(wave, plan, result)
        queue = [spec for group in _arrays(todo) for spec in group]  # stages of different kinds share the slots
        running: dict[str, object] = {}
        while queue or running:
            while queue and len(running) < max_parallel:
                spec = queue.pop(0)
                (job,) = _submit_array(ex, [spec], None, launcher)
                running[spec.name] = submitted[spec.name] = job
            for name, job in list(running.items()):
                if _job_finished("local", job):
                    running.pop(name)
            if on_poll is not None:
                on_poll()
            if len(running) == max_parallel or (running and not queue):
                time.sleep(float(launcher["poll_s"]))
        _classify(plan, [s.name for s in todo], result)
    return submitted


def _submit_slurm(plan: Plan, ex, launcher: Mapping, result: Dispatch) -> dict[str, object]:
    """Every wave at once, each array depending (afterok) on the jobs of its inputs; all or nothing."""
    submitted: dict[str, object] = {}
    dependency_ids: dict[str, str] = {}  # stage -> job id that will produce it
    try:
        for wave in plan.waves():
            todo = []
            for spec in _todo(wave, plan, result):
                active = _active_slurm_job(spec)
                if active is not None:  # already queued by an earlier submission: depend on it, don't duplicate
                    dependency_ids[spec.name] = active
                    result.jobs[spec.name] = active
                else:
                    todo.append(spec)
            for group in _arrays(todo):
                for part, dependency in _slurm_arrays(group, dependency_ids):
                    jobs = dict(zip([s.name for s in part], _submit_array(ex, part, dependency, launcher)))
                    submitted.update(jobs)
                    dependency_ids.update({name: job.job_id for name, job in jobs.items()})
    except submitit.core.utils.FailedJobError as err:
        for job in submitted.values():
            subprocess.run(["scancel", str(job.job_id)], capture_output=True)
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise LauncherError(f"SLURM refused the submission, nothing was submitted: {message}") from None
    return submitted


def dispatch(plan: Plan, exp_dir: Path, launcher: Mapping, wait: bool | None = None,
             on_poll: Callable[[], None] | None = None) -> Dispatch:
    """on_poll() after each look at the running jobs while waiting (the console's live view)."""
    exp_dir = Path(exp_dir)
    launcher = plain(parse(launcher, LauncherConfig, "launcher"))
    wait = (launcher["name"] == "local") if wait is None else bool(wait)
    if launcher["name"] == "local" and not wait:
        raise ConfigError("launcher=local always waits for its jobs: drop launcher.wait=false")
    # One flat folder: submitit would create a folder per job from "%j", and its local launcher a literal "%j".
    ex = _executor(launcher, exp_dir / contract.JOBS_DIR)
    result = Dispatch()
    if launcher["name"] == "local":
        submitted = _run_local(plan, ex, launcher, result, on_poll)
    else:
        submitted = _submit_slurm(plan, ex, launcher, result)
    result.jobs.update({name: job.job_id for name, job in submitted.items()})
    if wait and launcher["name"] != "local":
        _wait(submitted, launcher["name"], float(launcher["poll_s"]), on_poll)
        _classify(plan, [n for n in plan.stages if n in result.jobs], result)
    atomic_write_json(exp_dir / contract.DISPATCH_FILE, {"jobs": result.jobs, "reused": result.skipped,
                                                  "failed": result.failed, "not_run": result.not_run})
    return result
