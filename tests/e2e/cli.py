"""Running trd's command line the way a user does, from the repository root."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from trd.experiment import plan_experiment

REPO = Path(__file__).resolve().parents[2]

# Small enough for a test: 1 epoch each, the demo's data and model.
FAST = ["pretrain.epochs=1", "transfer.epochs=1"]


def _env(data_root: str) -> dict[str, str]:
    return {**os.environ, "TRD_DATA": data_root, "PYTHONUNBUFFERED": "1"}


def submit(*overrides: str, data_root: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "launch/submit.py", *overrides], cwd=REPO, env=_env(data_root), text=True,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"submit.py exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def submit_in_background(*overrides: str, data_root: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "launch/submit.py", *overrides], cwd=REPO, env=_env(data_root),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_stage(stage: Path) -> subprocess.Popen:
    """A planned stage's runner as its own process, as a job would start it (outside any torchrun world)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.Popen([sys.executable, "-m", "trd.runner", str(stage)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish_stage(stage: Path) -> dict:
    """Runs (or resumes) a planned stage to its end; its metrics.json."""
    proc = start_stage(stage)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads((stage / "metrics.json").read_text())


def finish_stage_on_ranks(stage: Path, world_size: int, port: int) -> dict:
    """Runs a planned stage as world_size processes of one torchrun-style world on this host; its metrics.json."""
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "trd.runner", str(stage)], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), "\n".join(e[-3000:] for e in errors)
    return json.loads((stage / "metrics.json").read_text())


def write_plan(out_root: Path, *overrides: str):
    """The plan of an experiment (overrides as on the command line, +exp=... among them), written under out_root
    as launch/submit.py would write it, without running anything; TRD_DATA must already point at the data."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"out_root={out_root}", *overrides])
    plan = plan_experiment(cfg)
    plan.write(out_root / cfg.name)
    return plan


def wait_for_mid_epoch_checkpoint(pointer: Path, global_step: int, proc: subprocess.Popen,
                                  epoch: int | None = None) -> None:
    """Waits until the checkpoint pointer records at least global_step steps, in the middle of an epoch (of the
    given epoch, when one is given)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        progress = json.loads(pointer.read_text())["progress"] if pointer.exists() else None
        if (progress and progress["global_step"] >= global_step and progress["step"]
                and (epoch is None or progress["epoch"] == epoch)):
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    pytest.fail(f"no mid-epoch checkpoint appeared at {pointer}")


def assert_same_weights(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Bit for bit: the same tensors under the same names."""
    assert weights.keys() == reference.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)


def stage_metrics(exp_dir: Path) -> dict[str, dict]:
    plan = json.loads((exp_dir / "plan.json").read_text())
    return {name: json.loads((Path(s["dir"]) / "metrics.json").read_text()) for name, s in plan["stages"].items()}


def stage_dir(exp_dir: Path, name: str) -> Path:
    return Path(json.loads((exp_dir / "plan.json").read_text())["stages"][name]["dir"])


def train_briefly(model, loader, optimizer, epochs: int = 3):
    """A few epochs of plain cross-entropy: a model whose features help on related data (tests' released models)."""
    import torch.nn.functional as F

    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
    return model
