"""Ranks from a plain srun step (slurm/sbatch_template.sh), without submitit or torchrun."""
from __future__ import annotations

import shutil

import pytest

from trd.engine.distributed import DistEnv, _first_host, _port_from_job_id, detect_env

LAUNCHERS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")


@pytest.fixture
def srun_task(monkeypatch):
    """Task 1 of a 2-task step on one node, as srun sets it up."""
    for key in LAUNCHERS:
        monkeypatch.delenv(key, raising=False)
    for key, value in {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2",
                       "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_NODELIST": "node1", "SLURM_PROCID": "1",
                       "SLURM_LOCALID": "1", "SLURM_NTASKS": "2"}.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_srun_task_gets_its_rank_world_and_a_port_shared_by_the_step(srun_task):
    assert detect_env() == DistEnv(rank=1, world_size=2, local_rank=1, master_addr="127.0.0.1",
                                   master_port=_port_from_job_id("770"))


def test_master_address_and_port_from_the_script_win(srun_task):
    srun_task.setenv("MASTER_ADDR", "node1")
    srun_task.setenv("MASTER_PORT", "29123")
    env = detect_env()
    assert (env.rank, env.world_size, env.master_addr, env.master_port) == (1, 2, "node1", 29123)


def test_batch_script_itself_is_one_process(srun_task):
    # The batch step has SLURM_PROCID=0 and SLURM_NTASKS=2 too, but no srun step.
    for key in ("SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NUM_NODES", "SLURM_STEP_NODELIST"):
        srun_task.delenv(key)
    srun_task.setenv("SLURM_PROCID", "0")
    env = detect_env()
    assert (env.rank, env.world_size) == (0, 1)


def test_one_task_step_is_one_process(srun_task):
    srun_task.setenv("SLURM_STEP_NUM_TASKS", "1")
    srun_task.setenv("SLURM_PROCID", "0")
    env = detect_env()
    assert (env.rank, env.world_size) == (0, 1)


def test_torchrun_inside_a_slurm_job_wins(srun_task):
    srun_task.setenv("RANK", "3")
    srun_task.setenv("WORLD_SIZE", "4")
    assert (detect_env().rank, detect_env().world_size) == (3, 4)


@pytest.mark.slurm
def test_multi_node_step_meets_on_the_first_host_of_its_node_list(slurm_cluster, srun_task):
    # scontrol expands node lists from slurm.conf alone; the nodes need not exist.
    assert shutil.which("scontrol")
    srun_task.setenv("SLURM_STEP_NUM_NODES", "3")
    srun_task.setenv("SLURM_STEP_NODELIST", "gpu[07-08],cpu1")
    assert _first_host("gpu[07-08],cpu1") == "gpu07"
    assert detect_env().master_addr == "gpu07"
