"""submitit features trd relies on, against the real one-node SLURM test cluster.

Each test submits through submitit.AutoExecutor exactly as trd's dispatcher would
and checks what SLURM itself records. Findings are summarised in slurm/README.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

try:  # the repo root is importable (python -m pytest, or a root-level conftest)
    from tests.slurm_cluster import SlurmCluster, final_state, job_info, job_state, wait_for_job, wait_until
except ModuleNotFoundError:  # pytest's prepend import mode put tests/ itself on sys.path
    from slurm_cluster import SlurmCluster, final_state, job_info, job_state, wait_for_job, wait_until

pytestmark = pytest.mark.slurm

# Job functions travel by value: the job's python need not be able to import
# this test module (its name depends on pytest's rootdir/import mode).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------- job bodies


def double(x: int) -> int:
    return 2 * x


def array_member(x: int) -> dict:
    env = submitit.JobEnvironment()
    return {"x": x, "array_job_id": env.array_job_id, "array_task_id": env.array_task_id, "job_id": env.job_id}


def stamped(name: str, folder: str, seconds: float, fail: bool = False) -> str:
    """Record when it ran, so that tests can check ordering from the files alone."""
    start = time.time()
    time.sleep(seconds)
    Path(folder, f"{name}.json").write_text(json.dumps({"start": start, "end": time.time()}))
    if fail:
        raise RuntimeError(f"{name} fails on purpose")
    return name


def task_view() -> dict:
    env = submitit.JobEnvironment()
    keys = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NODEID", "SLURM_JOB_ID", "SLURM_JOB_NODELIST")
    return {
        "env": {k: os.environ.get(k) for k in keys},
        "global_rank": env.global_rank,
        "local_rank": env.local_rank,
        "num_tasks": env.num_tasks,
        "num_nodes": env.num_nodes,
        "hostnames": list(env.hostnames),
        "job_id": env.job_id,
    }


class ResumableSum(submitit.helpers.Checkpointable):
    """Sums i*i for i < n_steps, one step per step_s, keeping its progress in a
    file so that a requeued run resumes instead of starting over.
    """

    def __init__(self, workdir: str, n_steps: int, step_s: float) -> None:
        self.workdir = Path(workdir)
        self.n_steps = n_steps
        self.step_s = step_s

    def __call__(self) -> int:
        progress = self.workdir / "progress.json"
        state = json.loads(progress.read_text()) if progress.exists() else {"step": 0, "total": 0}
        with (self.workdir / "starts.txt").open("a") as f:
            f.write(f"{state['step']} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        while state["step"] < self.n_steps:
            time.sleep(self.step_s)
            state["total"] += state["step"] ** 2
            state["step"] += 1
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, progress)  # never leave a torn progress file behind
        return state["total"]

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # Runs inside submitit's USR2 handler, in the job.
        with (self.workdir / "checkpoints.txt").open("a") as f:
            f.write(f"{time.time()}\n")
        return super().checkpoint(*args, **kwargs)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def executor(slurm_cluster: SlurmCluster, tmp_path: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
    ex.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=5, cpus_per_task=1, mem_gb=1)
    return ex


def describe(job: submitit.Job, cluster: SlurmCluster) -> str:
    """Everything useful when a job did not do what a test expected."""
    return (
        f"job {job.job_id}: {job_info(job.job_id)}\n"
        f"--- job stderr:\n{(job.stderr() or '')[-3000:]}\n"
        f"--- slurmctld.log:\n{cluster.log('slurmctld', 30)}"
    )


def result_of(job: submitit.Job, cluster: SlurmCluster, timeout: float = 60):
    try:
        wait_for_job(job, timeout)
    except TimeoutError as e:
        job.cancel(check=False)
        raise AssertionError(f"{e}\n{describe(job, cluster)}") from None
    return job.results() if job.num_tasks > 1 else job.result()


def expected_sum(n_steps: int) -> int:
    return sum(i * i for i in range(n_steps))


# ---------------------------------------------------------------- tests


def test_plain_job_returns_its_result(executor, slurm_cluster):
    job = executor.submit(double, 21)
    assert result_of(job, slurm_cluster) == 42
    assert final_state(job.job_id) == "COMPLETED"


def test_map_array_runs_as_one_array_job(executor, slurm_cluster):
    jobs = executor.map_array(array_member, [10, 11, 12])
    base = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{base}_{i}" for i in range(3)]
    results = [result_of(j, slurm_cluster) for j in jobs]
    assert [r["x"] for r in results] == [10, 11, 12]
    assert {r["array_job_id"] for r in results} == {base}
    assert [r["array_task_id"] for r in results] == ["0", "1", "2"]
    assert [r["job_id"] for r in results] == [j.job_id for j in jobs]
    for i, job in enumerate(jobs):
        assert final_state(job.job_id) == "COMPLETED"
        info = job_info(job.job_id)
        assert (info["ArrayJobId"], info["ArrayTaskId"]) == (base, str(i))


def test_batch_context_submits_an_array(executor, slurm_cluster):
    with executor.batch():
        jobs = [executor.submit(double, x) for x in range(3)]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1
    assert [result_of(j, slurm_cluster) for j in jobs] == [0, 2, 4]


def test_afterok_dependency_waits_for_success(executor, slurm_cluster, tmp_path):
    a = executor.submit(stamped, "A", str(tmp_path), 3.0)
    executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{a.job_id}"})
    b = executor.submit(stamped, "B", str(tmp_path), 0.0)
    wait_until(lambda: job_state(a.job_id) == "RUNNING", 30, f"A ({a.job_id}) to run")
    info = job_info(b.job_id)
    assert (info["JobState"], info["Reason"]) == ("PENDING", "Dependency"), describe(b, slurm_cluster)
    assert result_of(b, slurm_cluster) == "B"
    a_run = json.loads((tmp_path / "A.json").read_text())
    b_run = json.loads((tmp_path / "B.json").read_text())
    assert b_run["start"] >= a_run["end"]


def test_afterok_on_failed_job_cancels_dependent(executor, slurm_cluster, tmp_path):
    a = executor.submit(stamped, "A", str(tmp_path), 1.0, fail=True)
    executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{a.job_id}"})
    b = executor.submit(stamped, "B", str(tmp_path), 0.0)
    # DependencyParameters=kill_invalid_depend: cancelled at once instead of
    # staying PENDING (Reason=DependencyNeverSatisfied) forever.
    assert wait_for_job(b, 60) == "CANCELLED", describe(b, slurm_cluster)
    info = job_info(b.job_id)
    assert info["Reason"] == "DependencyNeverSatisfied"
    assert info["Dependency"] == f"afterok:{a.job_id}(failed)"
    assert final_state(a.job_id) == "FAILED"
    assert not (tmp_path / "B.json").exists()
    with pytest.raises(FailedJobError, match="A fails on purpose"):
        a.result()


def test_without_kill_on_invalid_dep_the_dependent_pends_forever(executor, slurm_cluster, tmp_path):
    # What clusters without DependencyParameters=kill_invalid_depend do, unless
    # the job asks for --kill-on-invalid-dep=yes itself (portable: trd should).
    a = executor.submit(stamped, "A", str(tmp_path), 0.0, fail=True)
    executor.update_parameters(
        slurm_additional_parameters={"dependency": f"afterok:{a.job_id}", "kill-on-invalid-dep": "no"}
    )
    b = executor.submit(stamped, "B", str(tmp_path), 0.0)
    try:
        assert final_state(a.job_id) == "FAILED"
        wait_until(
            lambda: job_info(b.job_id).get("Reason") == "DependencyNeverSatisfied", 30, "B's dependency to fail"
        )
        time.sleep(3)  # several scheduling cycles (sched_interval=2): still there
        info = job_info(b.job_id)
        assert (info["JobState"], info["Reason"]) == ("PENDING", "DependencyNeverSatisfied")
    finally:
        b.cancel(check=False)
    assert final_state(b.job_id) == "CANCELLED"


def test_submitit_view_of_a_job_that_never_ran(executor, slurm_cluster, tmp_path):
    """submitit learns of a job that wrote no result only through sacct."""
    a = executor.submit(stamped, "A", str(tmp_path), 0.0, fail=True)
    executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{a.job_id}"})
    b = executor.submit(stamped, "B", str(tmp_path), 0.0)
    assert final_state(b.job_id, 60) == "CANCELLED"
    if slurm_cluster.accounting:
        wait_until(lambda: b.done(force_check=True), 30, f"submitit to see job {b.job_id} done")
        assert b.state == "CANCELLED"
        b._results_timeout_s = 1  # result() waits that long (15 s by default) for a pickle that never comes
        with pytest.raises(UncompletedJobError, match="has not produced any output"):
            b.result()
    else:
        # sacct fails ("Slurm accounting storage is disabled"); submitit logs
        # "Bypassing sacct error" and keeps UNKNOWN, which it counts as not done:
        # b.result() would block forever. Hence tests.slurm_cluster.wait_for_job.
        assert not b.done(force_check=True)
        assert b.state == "UNKNOWN"


def test_afterok_on_unknown_job_id_is_treated_as_satisfied(executor, slurm_cluster, tmp_path):
    # What trd must guard against: once a finished job's record is purged from
    # slurmctld (MinJobAge, 300 s by default), afterok on it no longer blocks.
    executor.update_parameters(slurm_additional_parameters={"dependency": "afterok:999999"})
    b = executor.submit(stamped, "B", str(tmp_path), 0.0)
    assert result_of(b, slurm_cluster) == "B"


def test_two_tasks_see_their_ranks(executor, slurm_cluster):
    executor.update_parameters(tasks_per_node=2)
    job = executor.submit(task_view)
    views = result_of(job, slurm_cluster)
    assert len(views) == 2
    node = socket.gethostname().split(".")[0]
    for rank, view in enumerate(views):
        assert view["env"] == {
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NTASKS": "2",
            "SLURM_NODEID": "0",
            "SLURM_JOB_ID": job.job_id,
            "SLURM_JOB_NODELIST": node,
        }
        assert (view["global_rank"], view["local_rank"], view["num_tasks"], view["num_nodes"]) == (rank, rank, 2, 1)
        assert view["hostnames"] == [node]
        assert view["job_id"] == job.job_id


def test_preempted_checkpointable_job_resumes_after_requeue(executor, slurm_cluster, tmp_path):
    n_steps = 12
    job = executor.submit(ResumableSum(str(tmp_path), n_steps, 0.5))
    progress = tmp_path / "progress.json"
    wait_until(
        lambda: progress.exists() and json.loads(progress.read_text())["step"] >= 3,
        60,
        f"job {job.job_id} to make progress",
    )
    # What a preemption notice / submitit's own --signal=USR2@delay delivers:
    # USR2 to the job steps (not the batch shell), caught by submitit.
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    wait_until(lambda: job_info(job.job_id).get("Restarts") == "1", 30, "the requeue")
    assert result_of(job, slurm_cluster, timeout=90) == expected_sum(n_steps)
    starts = (tmp_path / "starts.txt").read_text().split("\n")[:-1]
    assert len(starts) == 2, starts
    assert starts[0] == "0 0"
    resumed_step, restart_count = map(int, starts[1].split())
    assert resumed_step >= 3 and restart_count == 1
    assert len((tmp_path / "checkpoints.txt").read_text().splitlines()) == 1
    assert final_state(job.job_id) == "COMPLETED"


def test_unknown_partition_fails_at_submission(executor):
    executor.update_parameters(slurm_partition="no_such_partition")
    with pytest.raises(FailedJobError) as info:
        executor.submit(double, 1)
    assert str(info.value) == (
        "sbatch: error: invalid partition specified: no_such_partition\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )
