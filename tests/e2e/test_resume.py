"""A stage killed or preempted mid-epoch resumes from its last checkpoint and ends exactly where an
uninterrupted run ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli import (
    REPO,
    assert_same_weights,
    finish_stage,
    start_stage,
    submit_in_background,
    wait_for_mid_epoch_checkpoint,
    write_plan,
)
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# Two epochs of the demo's pretraining on a quarter of the source data (15 steps an epoch), with a
# checkpoint every 4 steps: a kill lands mid-epoch.
RESUMABLE = ["+exp=demo", "stages=[pretrain]", "pretrain.epochs=2", "pretrain.checkpoint_every=4",
             "+data.source.fraction=0.25"]


def _plan_pretrain(out_root: Path, data_root: str, monkeypatch, *extra: str) -> Path:
    monkeypatch.setenv("TRD_DATA", data_root)
    return write_plan(out_root, *RESUMABLE, *extra)["pretrain"].dir


def _weights(stage: Path) -> dict[str, torch.Tensor]:
    return load_file(str(stage / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    monkeypatch = pytest.MonkeyPatch()
    stage = _plan_pretrain(tmp_path_factory.mktemp("reference"), data_root, monkeypatch)
    monkeypatch.undo()
    finish_stage(stage)
    return _weights(stage), json.loads((stage / "metrics.json").read_text())


def _wait_for_mid_epoch_checkpoint(stage: Path, proc: subprocess.Popen) -> None:
    # Step 8 or later of the first epoch (15 steps): a kill there loses part of an epoch.
    wait_for_mid_epoch_checkpoint(stage / "checkpoint" / "resume.json", 8, proc, epoch=0)


def test_killed_stage_resumes_mid_epoch_to_the_uninterrupted_result(tmp_path, data_root, monkeypatch, reference):
    stage = _plan_pretrain(tmp_path, data_root, monkeypatch)
    proc = start_stage(stage)
    _wait_for_mid_epoch_checkpoint(stage, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((stage / "metrics.json").read_text())["status"] == "running"
    assert not (stage / "model.safetensors").exists()
    finish_stage(stage)
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["status"] == "done"
    assert metrics["acc"] == reference[1]["acc"] and metrics["steps"] == reference[1]["steps"]
    assert_same_weights(_weights(stage), reference[0])


def _task_pids(controller_pid: int) -> list[int]:
    children = Path(f"/proc/{controller_pid}/task/{controller_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_timed_out_job_is_requeued_and_resumes_to_the_uninterrupted_result(tmp_path, data_root, monkeypatch,
                                                                          reference):
    # The time-out signal is sent by hand once a mid-epoch checkpoint exists, so the job is interrupted
    # whatever the machine's speed. Under a 5 min limit submitit counts any signal as a time-out (its
    # guaranteed walltime is limit - 10 min); the job checkpoints through Checkpointable, exits with
    # submitit's requeue code, and the local controller restarts it, as SLURM would requeue it.
    stage = _plan_pretrain(tmp_path, data_root, monkeypatch)
    proc = submit_in_background(*RESUMABLE, f"out_root={tmp_path}", "launcher.timeout_min=5",
                                "launcher.max_num_timeout=5", data_root=data_root)
    try:
        _wait_for_mid_epoch_checkpoint(stage, proc)
        job = json.loads((stage / "job.json").read_text())
        tasks = _task_pids(int(job["job_id"]))
        assert tasks, job
        for pid in tasks:
            os.kill(pid, signal.SIGUSR2)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    log = Path(job["stdout"]).read_text()  # submitit logs its signal handling to the job's stdout
    assert "this job is timed-out" in log and "Calling checkpoint method" in log, log[-2000:]
    assert "Requeued job" in log and log.count("Starting with JobEnvironment") == 2, log[-2000:]
    assert "trd: pretrain resumes from its checkpoint" in Path(job["stderr"]).read_text()
    assert json.loads((stage / "metrics.json").read_text())["status"] == "done"
    assert_same_weights(_weights(stage), reference[0])
    assert "pretrain" in out


def _wait_for_owner_to_be_waited_on(proc: subprocess.Popen) -> str:
    """The waiting job's stderr up to its announcement that it waits."""
    seen = ""
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "waiting for it instead of training beside it" in line:
            return seen
        assert line or proc.poll() is None, seen[-3000:]
    pytest.fail(f"the second job never said it waits: {seen[-3000:]}")


def test_a_second_job_for_a_running_stage_waits_for_it_and_trains_nothing(tmp_path, data_root, monkeypatch):
    stage = _plan_pretrain(tmp_path, data_root, monkeypatch)
    first = start_stage(stage)
    _wait_for_mid_epoch_checkpoint(stage, first)
    owner = json.loads((stage / "owner.json").read_text())
    assert owner["pid"] == first.pid
    # The first job is paused (alive, owning the stage) until the second has started up and found it.
    first.send_signal(signal.SIGSTOP)
    try:
        second = start_stage(stage)
        _wait_for_owner_to_be_waited_on(second)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    finished = json.loads((stage / "metrics.json").read_text())
    _, rest = second.communicate(timeout=120)
    assert second.returncode == 0, rest[-3000:]
    assert "pretrain 1/" not in rest  # it never trained: it returned the first job's result
    assert json.loads((stage / "metrics.json").read_text()) == finished
    assert not (stage / "owner.json").exists()


def test_a_waiting_job_takes_over_when_the_owner_dies_and_status_tells_a_dead_job(tmp_path, data_root, monkeypatch,
                                                                                   reference):
    stage = _plan_pretrain(tmp_path, data_root, monkeypatch)
    first = start_stage(stage)
    _wait_for_mid_epoch_checkpoint(stage, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    status = subprocess.run([sys.executable, "launch/status.py", str(tmp_path / "demo")], cwd=REPO,
                            capture_output=True, text=True)
    assert "pretrain  died" in status.stdout and "ended without writing a result" in status.stdout, status.stdout
    assert status.returncode == 1
    # A new owner replaces the dead one: it resumes from the checkpoint and ends where an uninterrupted run ends.
    metrics = finish_stage(stage)
    assert metrics["status"] == "done"
    assert_same_weights(_weights(stage), reference[0])
