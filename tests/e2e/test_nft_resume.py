"""The nft disposal killed mid-epoch resumes to exactly the uninterrupted result: its simulated attacker, the
attacker's head and its batches are drawn from the step number, and the target budget's validation history comes
back with the checkpoint, so nothing the kill lost can change the released weights or the budget's decision."""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from cli import REPO, finish_stage, start_stage
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from trd.experiment import plan_experiment

pytestmark = pytest.mark.slow

# A fifth of the source data (12 steps an epoch), one epoch of short attackers, a checkpoint every 3 steps and
# a validation every 4: the kill lands mid-epoch, between a checkpoint and the next validation.
SMALL = ["+data.source.fraction=0.2", "pretrain.epochs=1", "transfer.epochs=1", "stages=[pretrain,transfer,dispose]",
         "dispose.methods=[nft]", "dispose.epochs=1", "dispose.checkpoint_every=3", "dispose.validate_every=4",
         "dispose.nft.steps=[1,3]", "dispose.nft.batch_size=16"]


def _plan(out_root: Path, data_root: str, monkeypatch):
    monkeypatch.setenv("TRD_DATA", data_root)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+exp=demo", f"out_root={out_root}", *SMALL])
    plan = plan_experiment(cfg)
    plan.write(out_root / "demo")
    return plan


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    monkeypatch = pytest.MonkeyPatch()
    plan = _plan(tmp_path_factory.mktemp("reference"), data_root, monkeypatch)
    monkeypatch.undo()
    finish_stage(plan["pretrain"].dir)
    finish_stage(plan["transfer"].dir)
    metrics = finish_stage(plan["dispose/nft"].dir)
    return plan, load_file(str(plan["dispose/nft"].dir / "model.safetensors")), metrics


def _wait_for_checkpoint(pointer: Path, steps: int, proc) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        progress = json.loads(pointer.read_text())["progress"] if pointer.exists() else None
        if progress and progress["global_step"] >= steps and progress["step"]:
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    pytest.fail(f"no mid-epoch checkpoint appeared at {pointer}")


def test_nft_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, data_root, monkeypatch, reference):
    ref_plan, want_weights, want = reference
    plan = _plan(tmp_path, data_root, monkeypatch)
    for upstream in ("pretrain", "transfer"):  # the same hashes: finished inputs
        shutil.copytree(ref_plan[upstream].dir, plan[upstream].dir, dirs_exist_ok=True)
    stage = plan["dispose/nft"].dir
    proc = start_stage(stage)
    _wait_for_checkpoint(stage / "checkpoint" / "resume.json", 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (stage / "model.safetensors").exists()
    metrics = finish_stage(stage)
    assert metrics["status"] == "done" and metrics["steps"] == want["steps"]
    for key in ("acc", "target_budget"):
        assert metrics.get(key) == want.get(key), key
    weights = load_file(str(stage / "model.safetensors"))
    assert weights.keys() == want_weights.keys()
    for key, tensor in weights.items():
        torch.testing.assert_close(tensor, want_weights[key], rtol=0, atol=0, msg=key)
