"""The disposal stage through the CLI: methods fan out (nft among them), each evaluated and each released within
its target budget; nft killed mid-epoch resumes to the uninterrupted weights; a diverging run stops as diverged."""
from __future__ import annotations

import json
import shutil
import signal

import pytest
from cli import (
    FAST,
    assert_same_weights,
    finish_stage,
    stage_dir,
    stage_metrics,
    start_stage,
    submit,
    wait_for_mid_epoch_checkpoint,
    write_plan,
)
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# A quarter of the source data keeps each disposal epoch to 15 steps; the tests share one out_root (one work
# unit), so the later ones reuse the first's pretrain, transfer and uninterrupted nft stages.
SMALL = [*FAST, "+data.source.fraction=0.25", "transfer.scratch_baseline=false",
         "stages=[pretrain,transfer,dispose,evaluate]"]
# gc and nft, one epoch, a checkpoint every 3 steps and a validation of the target budget every 5
METHODS = ["dispose.epochs=1", "dispose.methods=[gc,nft]", "dispose.checkpoint_every=3", "dispose.validate_every=5",
           "dispose.nft.steps=[1,3]", "dispose.nft.second_order_steps=2"]


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    return tmp_path_factory.mktemp("dispose")


def test_disposal_methods_run_and_are_evaluated(out_root, data_root):
    tmp_path = out_root
    submit("+exp=demo", f"out_root={tmp_path}", *SMALL, *METHODS, data_root=data_root)
    metrics = stage_metrics(tmp_path / "demo")
    for method in ("gc", "nft"):
        assert metrics[f"dispose/{method}"]["status"] == "done"
        labels = metrics[f"dispose/{method}"]["model_labels"]
        assert labels["method"] == method and labels["lam"] == 0.9
        assert set(metrics[f"evaluate/dispose/{method}"]["acc"]) == {"source", "target"}
        events = list((stage_dir(tmp_path / "demo", f"dispose/{method}") / "tensorboard").glob("events.*"))
        assert events
    assert metrics["dispose/nft"]["simulated_attackers"]["steps"] == [1, 3]
    assert metrics["dispose/nft"]["model_labels"]["resist"] == "inverse-ce"
    assert "simulated_attackers" not in metrics["dispose/gc"]
    for method in ("gc", "nft"):
        _check_released_within_budget(tmp_path / "demo", f"dispose/{method}", metrics[f"dispose/{method}"])
    gc_events = (stage_dir(tmp_path / "demo", "dispose/gc") / "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(gc_events)).Reload().Tags()["scalars"]
    for tag in ("epoch/loss/total_sq_norm", "epoch/loss/sum_chunk_sq_norms", "epoch/loss/mean_pair_cosine",
                "epoch/loss/retain", "epoch/loss/unlearn", "epoch/acc/source", "epoch/acc/target"):
        assert tag in tags, tags


def _check_released_within_budget(exp, name: str, metrics: dict) -> None:
    """The released weights are the validated state the budget kept: their accuracy on the held-out slice is the
    one recorded at the released step, within the budget of the reference."""
    import torch

    from trd.data import build_loader
    from trd.data.role import validation_role
    from trd.engine.evaluation import accuracy
    from trd.models.release import load_released

    budget = metrics["target_budget"]
    assert budget["points"] == 2.0 and "0" in budget["val_acc"] and budget["released_step"] is not None
    released_acc = budget["val_acc"][str(budget["released_step"])]
    assert released_acc >= budget["reference_val_acc"] - 2.0
    if budget["stopped_at"] is None:
        assert max(int(s) for s in budget["val_acc"]) == metrics["steps"]
    stage = json.loads((stage_dir(exp, name) / "stage.json").read_text())
    role = validation_role(stage["config"]["target"])
    loader = build_loader(role, "train", 64, train=False)
    model = load_released(stage_dir(exp, name))
    assert 100 * accuracy(model, loader, torch.device("cpu")) == pytest.approx(released_acc)


def _plan(out, data_root: str, monkeypatch):
    monkeypatch.setenv("TRD_DATA", data_root)
    return write_plan(out, "+exp=demo", *SMALL, *METHODS)


def _done(stage) -> bool:
    path = stage / "metrics.json"
    return path.exists() and json.loads(path.read_text()).get("status") == "done"


@pytest.mark.extended  # README, Tests: python -m pytest -m extended
def test_nft_killed_mid_epoch_resumes_to_the_uninterrupted_result(out_root, tmp_path, data_root, monkeypatch):
    """Its simulated attacker, the attacker's head and batches are drawn from the step number and the budget's
    validations come back with the checkpoint: a kill between a checkpoint and the next validation changes
    nothing in the released weights, the accuracy or the budget's record."""
    reference = _plan(out_root, data_root, monkeypatch)
    for name in ("pretrain", "transfer", "dispose/nft"):  # done already when the first test ran on this worker
        if not _done(reference[name].dir):
            finish_stage(reference[name].dir)
    want = json.loads((reference["dispose/nft"].dir / "metrics.json").read_text())
    want_weights = load_file(str(reference["dispose/nft"].dir / "model.safetensors"))

    plan = _plan(tmp_path, data_root, monkeypatch)
    for upstream in ("pretrain", "transfer"):  # the same hashes: finished inputs
        shutil.copytree(reference[upstream].dir, plan[upstream].dir, dirs_exist_ok=True)
    stage = plan["dispose/nft"].dir
    proc = start_stage(stage)
    wait_for_mid_epoch_checkpoint(stage / "checkpoint" / "resume.json", 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (stage / "model.safetensors").exists()
    metrics = finish_stage(stage)
    assert metrics["status"] == "done" and metrics["steps"] == want["steps"] == 15
    assert metrics["acc"] == want["acc"] and metrics["target_budget"] == want["target_budget"]
    assert_same_weights(load_file(str(stage / "model.safetensors")), want_weights)


def test_diverging_disposal_stops_as_diverged_and_keeps_its_last_good_checkpoint(out_root, data_root):
    proc = submit("+exp=demo", f"out_root={out_root}", "name=diverge", *SMALL, "dispose.methods=[neg]",
                  "dispose.lam=1.0", "dispose.grad_clip=0", "dispose.optim.name=sgd", "dispose.optim.lr=1e38",
                  "dispose.checkpoint_every=1",
                  data_root=data_root, check=False)
    assert proc.returncode == 1
    assert "reused finished stages: pretrain, transfer" in proc.stdout
    exp = out_root / "diverge"
    metrics = json.loads((stage_dir(exp, "dispose/neg") / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "non-finite" in metrics["error"]
    pointer = json.loads((stage_dir(exp, "dispose/neg") / "checkpoint" / "resume.json").read_text())
    assert pointer["progress"]["global_step"] >= 1
    assert not (stage_dir(exp, "dispose/neg") / "model.safetensors").exists()
    assert json.loads((exp / "dispatch.json").read_text())["not_run"] == ["evaluate/dispose/neg"]
