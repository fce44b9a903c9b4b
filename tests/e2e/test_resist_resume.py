"""The transfer-resistant stages that run in phases end exactly where an uninterrupted run ends when killed
mid-epoch: SKD in its second phase (the new head), UNSIR in its first (training beside a second, resumable data
stream; the noise, impair and repair then follow from the restored model). Reverse-MAML runs the one-phase loop
whose resume tests/e2e/test_resume.py covers; a diverging meta step stops as diverged."""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from cli import (
    assert_same_weights,
    finish_stage,
    stage_dir,
    start_stage,
    submit,
    wait_for_mid_epoch_checkpoint,
    write_plan,
)
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# A fifth of the defender's data, a checkpoint every 2 steps, one or two short epochs per phase.
SMALL = ["+data.source.fraction=0.2", "+data.malicious.fraction=0.2", "plain.epochs=1",
         "skd.epochs=1", "skd.checkpoint_every=2", "skd.head.epochs=2", "skd.head.checkpoint_every=2",
         "unsir.epochs=1", "unsir.checkpoint_every=2", "unsir.noise.steps=3", "unsir.retain_fraction=0.5",
         "unsir.impair.checkpoint_every=2", "unsir.repair.epochs=2", "unsir.repair.checkpoint_every=2",
         "unsir.impair.batch_size=16", "unsir.repair.batch_size=16", "skd.head.batch_size=16",
         "stages=[plain,skd,unsir]"]
# (stage, where the checkpoint the kill waits for is written, the progress it must have reached)
CASES = [("skd", "head", 3), ("unsir", ".", 3)]  # unsir: killed while training beside its malicious stream


def _plan(out_root: Path, data_root: str, monkeypatch):
    monkeypatch.setenv("TRD_DATA", data_root)
    return write_plan(out_root, "+exp=resist_demo", *SMALL)


@pytest.fixture(scope="module")
def references(tmp_path_factory, data_root):
    monkeypatch = pytest.MonkeyPatch()
    plan = _plan(tmp_path_factory.mktemp("reference"), data_root, monkeypatch)
    monkeypatch.undo()
    finish_stage(plan["plain"].dir)
    found = {name: (load_file(str(plan[name].dir / "model.safetensors")), finish_metrics)
             for name, finish_metrics in ((n, finish_stage(plan[n].dir)) for n, _, _ in CASES)}
    return {**found, "plain": plan["plain"].dir}


@pytest.mark.extended  # 2-3 minutes of the default run's 15 (README, Tests): python -m pytest -m extended
@pytest.mark.parametrize("name, phase, steps", CASES)
def test_a_phase_killed_mid_epoch_resumes_to_the_uninterrupted_result(name, phase, steps, tmp_path, data_root,
                                                                       monkeypatch, references):
    plan = _plan(tmp_path, data_root, monkeypatch)
    shutil.copytree(references["plain"], plan["plain"].dir, dirs_exist_ok=True)  # the same hash: a finished input
    stage = plan[name].dir
    proc = start_stage(stage)
    wait_for_mid_epoch_checkpoint(stage / phase / "checkpoint" / "resume.json", steps, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (stage / "model.safetensors").exists()
    metrics = finish_stage(stage)
    want_weights, want_metrics = references[name]
    for key in ("acc", "misses", "unsir"):
        assert metrics.get(key) == want_metrics.get(key)
    assert_same_weights(load_file(str(stage / "model.safetensors")), want_weights)
    assert not list(stage.glob("**/checkpoint"))


def test_a_diverging_meta_step_stops_the_stage_as_diverged_with_its_last_good_checkpoint(tmp_path, data_root):
    proc = submit("+exp=resist_demo", f"out_root={tmp_path}", *SMALL[:2], "stages=[reverse_maml]",
                  "reverse_maml.init=scratch", "reverse_maml.inner_steps=1", "reverse_maml.grad_clip=0",
                  "reverse_maml.optim.name=sgd", "reverse_maml.optim.lr=1e38", "reverse_maml.checkpoint_every=1",
                  data_root=data_root, check=False)
    assert proc.returncode == 1
    stage = stage_dir(tmp_path / "resist_demo", "reverse_maml")
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "non-finite" in metrics["error"]
    assert json.loads((stage / "checkpoint" / "resume.json").read_text())["progress"]["global_step"] >= 1
    assert not (stage / "model.safetensors").exists()
