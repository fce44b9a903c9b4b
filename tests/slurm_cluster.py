"""pytest plugin: a real one-node SLURM cluster for tests marked ``slurm``.

Enable it in the repository's root conftest.py (tests/ has no __init__.py, so
`tests.` is importable only when the root is on sys.path: a root conftest puts
it there; a tests/conftest.py alone does not under plain `pytest`)::

    pytest_plugins = ["tests.slurm_cluster"]

or, from tests/conftest.py, ``from slurm_cluster import slurm_cluster  # noqa: F401``
(pytest puts tests/ on sys.path for it), and use it with::

    @pytest.mark.slurm
    def test_x(slurm_cluster): ...

The session-scoped ``slurm_cluster`` fixture starts munged, mariadbd+slurmdbd
(when installed, so that sacct works), slurmctld and slurmd through
slurm/test_cluster.sh in a temporary directory, points ``SLURM_CONF`` of this
process at it, and stops every daemon by its pid file at the end of the session,
failed tests or not. Without root or SLURM it skips, except under CI=true, where
it fails: CI is supposed to provide the cluster.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "test_cluster.sh"
INSTALL = REPO / "slurm" / "install_test_cluster.sh"
REQUIRED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "srun")
# munge's unix socket lives in the cluster dir; sockets are limited to 108 bytes.
MAX_DIR_LEN = 80


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    dir: Path
    conf: Path
    partition: str
    env: dict[str, str]  # to merge into the environment of subprocesses
    accounting: bool  # True: slurmdbd runs, so sacct (hence submitit's job.state) works
    jobcomp: Path  # one line per finished job (also readable with `sacct -c`)

    def log(self, name: str, lines: int = 40) -> str:
        """Tail of one daemon log (slurmctld, slurmd, slurmdbd, munged, mariadbd)."""
        path = self.dir / "log" / f"{name}.log"
        if not path.exists():
            return f"(no {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# Job states after which a SLURM job will not run again (REQUEUED/PREEMPTED are not final).
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)


def job_info(job_id: str) -> dict[str, str]:
    """slurmctld's record of one job or array task ("12" or "12_3"), e.g. JobState,
    Reason, Restarts, ArrayJobId; {} once the record is gone (MinJobAge) or unknown.

    Reads slurmctld's memory, so it works without accounting, unlike sacct.
    """
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {}
    line = proc.stdout.splitlines()[0]  # an unsplit pending array shows one line per task range
    return dict(re.findall(r"(\w[\w:/]*)=(\S*)", line))


def job_state(job_id: str) -> str:
    return job_info(job_id).get("JobState", "UNKNOWN")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll predicate until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def final_state(job_id: str, timeout: float = 30) -> str:
    """SLURM's final state of a job, waiting for it: a result pickle can appear
    while the job is still RUNNING (its python is exiting)."""

    def final() -> str | None:
        state = job_state(job_id)
        return state if state in FINAL_STATES else None

    return wait_until(final, timeout, f"SLURM job {job_id} to reach a final state")


def wait_for_job(job: Any, timeout: float) -> str:
    """Wait until SLURM has finished a submitit job, whether or not sacct works;
    return its final state (COMPLETED, FAILED, CANCELLED, ...).

    submitit's own job.done() is true once every task's result pickle exists, or
    once sacct reports a final state. Without accounting sacct fails (submitit
    logs "Bypassing sacct error" and keeps the state UNKNOWN), so a job that
    never writes a result (cancelled, killed, DependencyNeverSatisfied) would be
    waited on forever; and a result pickle can appear while the job is still
    RUNNING. Hence slurmctld's record is what decides here. Once that record is
    purged (MinJobAge) the result pickles are all there is: "UNKNOWN" then.
    """

    def finished() -> str | None:
        state = job_state(job.job_id)
        if state in FINAL_STATES:
            return state
        if state == "UNKNOWN" and all(job.task(i).paths.result_pickle.exists() for i in range(job.num_tasks)):
            return state
        return None

    return wait_until(finished, timeout, f"SLURM job {job.job_id} to finish (state {job_state(job.job_id)})")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"SLURM test cluster unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


def _missing() -> list[str]:
    return [b for b in REQUIRED if shutil.which(b) is None]


def _ensure_installed() -> None:
    if os.geteuid() != 0:
        _unavailable("needs root (slurmd runs jobs as their submitter; munged/slurmd must run as root)")
    if _missing() and shutil.which("apt-get"):
        proc = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            _unavailable(f"{INSTALL.name} failed:\n{proc.stderr[-3000:]}")
    missing = _missing()
    if missing:
        _unavailable(f"missing binaries {missing}; run slurm/install_test_cluster.sh as root")


def _cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slurm")
    if len(str(path)) > MAX_DIR_LEN:  # e.g. a long --basetemp
        path = Path(tempfile.mkdtemp(prefix="trd-slurm-", dir="/tmp"))
    return path


def _run_script(command: str, path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # Own session, so that a timeout kills the script's subshells too, not just bash.
    proc = subprocess.Popen(
        [str(SCRIPT), command, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, 124, out, f"{err}\n(timed out after {timeout:.0f}s)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _stop(path: Path) -> None:
    proc = _run_script("stop", path, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"stopping the SLURM test cluster in {path} failed:\n{proc.stderr}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    _ensure_installed()
    path = _cluster_dir(tmp_path_factory)
    stopped = False

    def stop_once() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            _stop(path)

    # Backstop for teardowns pytest never reaches (e.g. a second Ctrl-C).
    atexit.register(stop_once)
    t0 = time.monotonic()
    proc = _run_script("start", path, timeout=300)
    if proc.returncode != 0:
        stop_once()
        pytest.fail(f"slurm/test_cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    conf = path / "slurm.conf"
    conf_text = conf.read_text()
    cluster = SlurmCluster(
        dir=path,
        conf=conf,
        partition="debug",
        env={"SLURM_CONF": str(conf)},
        accounting="accounting_storage/slurmdbd" in conf_text,
        jobcomp=path / "jobcomp.txt",
    )
    print(f"\nSLURM test cluster up in {time.monotonic() - t0:.1f}s: {path} (accounting={cluster.accounting})")
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)  # submitit calls sbatch/sacct/scontrol with our environment
    try:
        yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop_once()
        atexit.unregister(stop_once)
