"""trd's command line against the SLURM test cluster, the way a user runs it, and what SLURM recorded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from slurm_cluster import FINAL_STATES, SlurmCluster, job_info, wait_until

REPO = Path(__file__).resolve().parents[2]

# The demo pipeline, small: 1 epoch each, pretraining on a quarter of the source data (15 steps) with a
# checkpoint every 4, so that a preemption lands mid-epoch. Stages are pinned so that new stages in the demo
# experiment do not slow these tests down.
DEMO = ["+exp=demo", "stages=[pretrain,transfer,evaluate]", "pretrain.epochs=1", "transfer.epochs=1",
        "pretrain.checkpoint_every=4", "+data.source.fraction=0.25"]

# Pretraining on 2 ranks (a 2-task job), which test_trd_on_slurm checks and the sbatch template reproduces:
# 6 steps on a tenth of the source data, a checkpoint every 2.
TWO_RANKS = ["+exp=demo", "stages=[pretrain]", "pretrain.epochs=1", "pretrain.checkpoint_every=2",
             "+data.source.fraction=0.1", "launcher.tasks_per_node=2"]


def slurm_launcher(cluster: SlurmCluster, partition: str | None = None) -> list[str]:
    # One CPU and 1 GB per job: two jobs share the 2-CPU test node.
    return ["launcher=slurm", f"launcher.partition={partition or cluster.partition}", "launcher.cpus_per_task=1",
            "launcher.mem_gb=1", "launcher.gpus_per_node=0", "launcher.poll_s=1"]


def cli_env(cluster: SlurmCluster | None, data_root: str, **extra: str) -> dict[str, str]:
    # One thread per process everywhere: the local and SLURM runs compared bit for bit must compute alike,
    # and two jobs on the 2-CPU node would otherwise fight over the cores.
    env = {**os.environ, **(cluster.env if cluster else {}), "TRD_DATA": data_root, "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", **extra}
    return env


def submit(*overrides: str, cluster: SlurmCluster | None, data_root: str, timeout: float = 600, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "launch/submit.py", *overrides], cwd=REPO, text=True, capture_output=True,
                          env=env or cli_env(cluster, data_root), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"submit.py exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned(overrides: list[str], out_root: Path, data_root: str, write: bool = True):
    """An experiment planned in this process, as launch/submit.py plans it (stage dirs with stage.json when
    written); nothing is submitted."""
    from hydra import compose, initialize_config_dir

    from trd.experiment import plan_experiment

    saved = os.environ.get("TRD_DATA")
    os.environ["TRD_DATA"] = data_root  # the embedded data config reads it while resolving
    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*overrides, f"out_root={out_root}"])
        result = plan_experiment(cfg)
    finally:
        if saved is None:
            os.environ.pop("TRD_DATA")
        else:
            os.environ["TRD_DATA"] = saved
    if write:
        result.write(Path(out_root) / str(cfg.name))
    return result


def status(exp: Path, cluster: SlurmCluster) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch/status.py", str(exp)], cwd=REPO, text=True, capture_output=True,
                          env={**os.environ, **cluster.env}, timeout=60)


def plan(exp: Path) -> dict[str, dict]:
    return json.loads((exp / "plan.json").read_text())["stages"]


def stage_dir(exp: Path, name: str) -> Path:
    return Path(plan(exp)[name]["dir"])


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def metrics(exp: Path) -> dict[str, dict | None]:
    return {name: read(Path(s["dir"]) / "metrics.json") for name, s in plan(exp).items()}


def jobs(exp: Path) -> dict[str, str]:
    """Stage name -> the SLURM job (or array task) that ran it last, from each stage's job.json."""
    return {name: job["job_id"] for name, s in plan(exp).items()
            if (job := read(Path(s["dir"]) / "job.json")) is not None}


def track(exp: Path, slurm_jobs: list[str]) -> None:
    """Registers an experiment's jobs for the teardown, also when its submission was cut short."""
    if (exp / "plan.json").exists():
        slurm_jobs.extend(jobs(exp).values())


def wait_final(job_ids, timeout: float) -> dict[str, str]:
    """Every job's final SLURM state, waiting for them all."""
    ids = list(job_ids)

    def states():
        now = {j: job_info(j).get("JobState", "UNKNOWN") for j in ids}
        return now if all(s in FINAL_STATES for s in now.values()) else None

    try:
        return wait_until(states, timeout, f"SLURM jobs {ids} to end", interval=0.5)
    except TimeoutError as err:
        raise AssertionError(f"{err}: {[(j, job_info(j).get('JobState')) for j in ids]}") from None


def wait_for_checkpoint(stage: Path, job_id: str, timeout: float = 180) -> dict:
    """The stage's first resume checkpoint, while its job still runs."""
    pointer = stage / "checkpoint" / "resume.json"

    def progress():
        assert job_info(job_id).get("JobState") not in FINAL_STATES, f"job {job_id} ended before a checkpoint"
        return read(pointer) if pointer.exists() else None

    return wait_until(progress, timeout, f"a checkpoint in {stage}", interval=0.1)["progress"]


def cancel_unfinished(job_ids) -> None:
    """Teardown: nothing of ours stays queued or running on the shared test cluster."""
    left = [j for j in job_ids if job_info(j).get("JobState", "UNKNOWN") not in FINAL_STATES | {"UNKNOWN"}]
    if left:
        subprocess.run(["scancel", *left], capture_output=True)
        deadline = time.monotonic() + 30
        ended = FINAL_STATES | {"UNKNOWN"}
        while time.monotonic() < deadline and any(job_info(j).get("JobState", "UNKNOWN") not in ended for j in left):
            time.sleep(0.3)


def weights(stage: Path) -> dict[str, torch.Tensor]:
    return load_file(str(stage / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=0, atol=0, msg=name)
