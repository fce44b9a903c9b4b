"""The piggyback (PL) stage on a tiny model: repeatable, resumable mid-grid, best-of-grid defined as documented,
and bad inputs refused with one-line errors before any job runs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from cli import REPO, finish_stage, start_stage, submit, train_briefly
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trd.atomic import file_sha256
from trd.config import ConfigError
from trd.data import build_loader
from trd.experiment import plan_experiment
from trd.models import build_model, save_model

pytestmark = pytest.mark.slow

# A width-8 CNN attacked on a quarter of the piggyback data (150 images: 120 to train on, 30 to validate; 7 steps
# an epoch at batch 16), 45 steps with 3 evaluations at two learning rates and one no run survives, checkpoints
# every 4 steps so that a kill lands inside a grid point; the grid as written (no extension).
TASK = ('+data.piggyback.small={embedded: synth_piggyback, train: "${data.root}/synth_piggyback/32px/train-{000000..000001}.tar", '
        'test: "${data.root}/synth_piggyback/32px/test-{000000..000001}.tar", num_classes: 10, image_size: 32, fraction: 0.25}')
SCHEME = ("+piggyback.schemes.finetune={mode: full, k: null, steps: 45, evals: 3, batch_size: 16, augment: true, "
          "checkpoint_every: 4, extend: null, optim: {name: sgd, lr: [0.05, 0.01, 1.0e+6], momentum: 0.9, "
          "weight_decay: 0.0005, schedule: cosine}}")
BASE = ["+exp=demo", "stages=[piggyback]", TASK, "piggyback.tasks=[small]", "~piggyback.schemes.finetune", SCHEME,
        "~piggyback.schemes.linear",
        "piggyback.scratch=false", "+model.width=8"]
STAGE = "piggyback/mine/small/finetune/s0"


@pytest.fixture(scope="module")
def user_model(tmp_path_factory, data_root) -> Path:
    """A released model whose body helps on the task (a few Adam steps on the piggyback train split), so the
    attack learns well above chance and equal accuracies below are not equal chance levels."""
    cfg = _compose([*BASE, f"out_root={tmp_path_factory.mktemp('unused')}"], data_root)
    role = OmegaConf.to_container(cfg.data.piggyback.small, resolve=True)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, image_size=32, width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = build_loader({**role, "fraction": None}, "train", 32, train=True)
    train_briefly(model, loader, optimizer)
    path = tmp_path_factory.mktemp("model") / "released.safetensors"
    save_model(model, path)
    return path


def _compose(overrides: list[str], data_root: str):
    old = os.environ.get("TRD_DATA")
    os.environ["TRD_DATA"] = data_root
    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        if old is None:
            os.environ.pop("TRD_DATA")
        else:
            os.environ["TRD_DATA"] = old


def _plan(out_root: Path, data_root: str, *extra: str):
    return plan_experiment(_compose([*BASE, f"out_root={out_root}", *extra], data_root))


def _planned_stage(out_root: Path, data_root: str, model: Path) -> Path:
    plan = _plan(out_root, data_root, f"+piggyback.models.mine={{path: {model}, method: user}}")
    plan.write(out_root / "demo")
    return plan[STAGE].dir


@pytest.fixture(scope="module")
def reference_stage(tmp_path_factory, data_root, user_model) -> Path:
    stage = _planned_stage(tmp_path_factory.mktemp("reference"), data_root, user_model)
    finish_stage(stage)
    return stage


@pytest.fixture(scope="module")
def reference(reference_stage) -> dict:
    return json.loads((reference_stage / "metrics.json").read_text())


def test_pl_metrics_name_the_attack_and_hold_every_curve(reference):
    m = reference
    assert m["status"] == "done" and m["model_labels"] == {"method": "user"}
    assert m["attack_labels"] == {"attacks": "mine", "task": "small", "scheme": "finetune", "seed": 0, "fraction": 0.25}
    assert [p["point"] for p in m["grid"]] == ["lr0.05", "lr0.01", "lr1e+06"]
    assert all(p["status"] == "done" and p["steps"] == [15, 30, 45] and len(p["val_curve"]) == 3 for p in m["grid"][:2])
    assert m["train_samples"] == 120 and m["val_samples"] == 30 and m["steps_per_epoch"] == 7
    assert m["budget"] == 45 and m["batch_size"] == 16
    # Fine-tuning learned something, so equal numbers below are not equal chance levels.
    assert max(max(p["curve"]) for p in m["grid"][:2]) > 2 * m["chance"]


def test_a_diverged_grid_point_is_recorded_and_left_out_never_counted_as_zero(reference):
    diverged = reference["grid"][2]
    assert diverged["status"] == "diverged" and "non-finite" in diverged["error"]
    assert reference["status"] == "done"  # the other points still give the attacker's accuracy


def test_best_of_grid_is_at_least_every_grid_point_and_final_is_the_fixed_point(reference):
    m = reference
    every = [acc for p in m["grid"] if p["status"] == "done" for acc in p["curve"]]
    assert m["acc_pl"]["best"] == max(every)
    assert all(m["acc_pl"]["best"] >= acc for acc in every)
    assert m["acc_pl"]["final"] == m["grid"][0]["curve"][-1]  # the scheme's first learning rate, end of budget
    best = m["best_point"]
    point = next(p for p in m["grid"] if p["point"] == best["point"])
    assert point["curve"][point["steps"].index(best["step"])] == m["acc_pl"]["best"]
    selected = m["selected_point"]  # the honest attacker: best validation accuracy, its test accuracy
    chosen = next(p for p in m["grid"] if p["point"] == selected["point"])
    at = chosen["steps"].index(selected["step"])
    assert chosen["val_curve"][at] == max(v for p in m["grid"] if p["status"] == "done" for v in p["val_curve"])
    assert m["acc_pl"]["selected"] == chosen["curve"][at]


def test_same_seed_same_accuracy_even_when_killed_mid_grid(tmp_path, data_root, user_model, reference):
    stage = _planned_stage(tmp_path, data_root, user_model)
    proc = start_stage(stage)
    first = stage / "grid" / "lr0.05" / "result.json"
    pointer = stage / "grid" / "lr0.01" / "checkpoint" / "resume.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        progress = json.loads(pointer.read_text())["progress"] if pointer.exists() else None
        if progress and progress["global_step"] >= 8:  # inside the second grid point, past its first epoch
            break
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    else:
        pytest.fail("no checkpoint of the second grid point appeared")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_at = first.stat().st_mtime_ns
    assert json.loads((stage / "metrics.json").read_text())["status"] == "running"
    metrics = finish_stage(stage)
    assert first.stat().st_mtime_ns == finished_at  # the finished point was not trained again
    assert metrics["grid"] == reference["grid"]
    assert metrics["acc_pl"] == reference["acc_pl"]
    assert not any((stage / "grid").glob("*/checkpoint"))  # resume state dropped once each point is done


def test_the_same_file_under_another_name_takes_the_finished_attack_s_results(tmp_path, data_root, user_model,
                                                                          reference_stage, reference):
    finished = tmp_path / "stages" / reference_stage.name  # the reference attack, in an out_root of this test's own
    shutil.copytree(reference_stage, finished)
    twin = tmp_path / "twin.safetensors"  # what a disposal that found no state within its budget releases
    twin.write_bytes(user_model.read_bytes())
    shards = reference_stage.parent.parent / "data"  # the same data files: the same attack
    plan = _plan(tmp_path, data_root, f"+piggyback.models.twin={{path: {twin}, method: twin}}", f"data.root={shards}")
    plan.write(tmp_path / "twin")
    stage = plan["piggyback/twin/small/finetune/s0"].dir
    metrics = finish_stage(stage)
    assert metrics["reused_from"] == str(finished) and not (stage / "grid").exists()
    assert metrics["reused_code"] == reference["code"] and metrics["attacked_sha256"] == file_sha256(twin)
    assert metrics["model_labels"] == {"method": "twin"} and metrics["attack_labels"]["attacks"] == "twin"
    assert metrics["grid"] == reference["grid"] and metrics["acc_pl"] == reference["acc_pl"]


@pytest.mark.parametrize("override, message", [
    ("piggyback.schemes.finetune.optim.lr=[]", "piggyback.schemes.finetune.optim.lr is empty: give at least one"),
    ("+piggyback.schemes.finetune.epochz=3", "unknown config key piggyback.schemes.finetune.epochz"),
    ("piggyback.schemes.finetune.mode=last_k", "piggyback.schemes.finetune.mode=last_k needs piggyback.schemes.finetune.k >= 1"),
    ("piggyback.paper_scheme=nope", "piggyback.paper_scheme='nope' is not among piggyback.schemes"),
    ("piggyback.tasks=[nope]", "piggyback.tasks names 'nope', which data.piggyback does not have"),
    ("data.piggyback.small.num_classes=7",
     "data.piggyback.small.num_classes=7 but its data (synth_piggyback) has 10 classes: set data.piggyback.small.num_classes=10"),
    ("piggyback.seeds=[]", "piggyback.seeds=[] must be a non-empty list of integers"),
    ("+piggyback.schemes.finetune.epochs=3", "give the budget as piggyback.schemes.finetune.steps (optimiser steps) "
                                            "or piggyback.schemes.finetune.epochs, one of them"),
    ("piggyback.schemes.finetune.steps=0", "piggyback.schemes.finetune.steps=0 is out of range: it must be >= 1"),
    ("piggyback.schemes.finetune.batch_size=0", "piggyback.schemes.finetune.batch_size=0 is out of range"),
    ("piggyback.schemes.finetune.extend={lr_steps: 0}", "piggyback.schemes.finetune.extend.lr_steps=0 is out of range"),
    ("piggyback.val_fraction=0.995", "piggyback.val_fraction=0.995 leaves none of the 150 training images"),
    ("+piggyback.fractions=[0.5,1.5]", "piggyback.fractions=[0.5, 1.5] is out of range"),
])
def test_bad_piggyback_config_is_a_one_line_error(tmp_path, data_root, override, message):
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, data_root, override)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_user_model_that_does_not_match_the_config_is_refused_at_plan_time(tmp_path, data_root, user_model):
    wide = tmp_path / "wide.safetensors"
    save_model(build_model("cnn", num_classes=10, image_size=32, width=16), wide)
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path, data_root, f"+piggyback.models.wide={{path: {wide}}}")
    assert "piggyback.models.wide" in str(err.value) and "option width=16, expected width=8" in str(err.value)
    other_head = tmp_path / "head.safetensors"
    save_model(build_model("cnn", num_classes=7, image_size=32, width=8), other_head)
    with pytest.raises(ConfigError, match="saved model head has 7 classes, expected num_classes=10"):
        _plan(tmp_path, data_root, f"+piggyback.models.head={{path: {other_head}}}")
    with pytest.raises(ConfigError, match="does not exist: give the path of a model.safetensors file"):
        _plan(tmp_path, data_root, f"+piggyback.models.gone={{path: {tmp_path / 'gone.safetensors'}}}")
    with pytest.raises(ConfigError, match="piggyback.models.scratch has the name of a stage or of the scratch"):
        _plan(tmp_path, data_root, f"+piggyback.models.scratch={{path: {user_model}}}")


def test_bad_input_through_the_cli_is_one_line_and_exit_2(tmp_path, data_root):
    proc = submit(*BASE, f"out_root={tmp_path}", "piggyback.schemes.finetune.optim.lr=[]", data_root=data_root,
                  check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("trd: error: piggyback.schemes.finetune.optim.lr is empty")
    assert not (tmp_path / "demo").exists()


def test_stronger_attacker_group_plans(tmp_path, data_root):
    plan = _plan(tmp_path, data_root, "attack=grid", "piggyback.scratch=true")
    schemes = {s.attack["scheme"] for s in plan.of_kind("piggyback")}
    assert schemes == {"finetune", "sgd", "adam", "last2"}  # BASE leaves the linear probe out


def test_data_amounts_are_one_attack_each(tmp_path, data_root):
    plan = _plan(tmp_path, data_root, "+piggyback.fractions=[0.1,0.5]", "piggyback.scratch=true")
    attacks = {s.attack["task"]: s for s in plan.of_kind("piggyback")}
    assert set(attacks) == {"small@0.1", "small@0.5"}
    assert attacks["small@0.1"].attack["fraction"] == 0.1 and attacks["small@0.1"].config["task"]["fraction"] == 0.1
    # The attacker's training and validation slices split what the fraction kept, without overlap.
    assert attacks["small@0.5"].config["task"]["part"] == [0.0, 0.8]
    assert attacks["small@0.5"].config["val_task"]["part"] == [0.8, 1.0]


def test_a_batch_larger_than_the_attackers_data_is_clamped_to_it(tmp_path, data_root, user_model):
    plan = _plan(tmp_path, data_root, f"+piggyback.models.mine={{path: {user_model}, method: user}}",
                 "piggyback.schemes.finetune.batch_size=500", "piggyback.schemes.finetune.steps=3",
                 "piggyback.schemes.finetune.optim.lr=[0.05]", "piggyback.val_fraction=0")
    plan.write(tmp_path / "demo")
    metrics = finish_stage(plan[STAGE].dir)
    assert metrics["batch_size"] == 150 and metrics["steps_per_epoch"] == 1 and metrics["budget"] == 3
    assert metrics["val_samples"] == 0 and metrics["acc_pl"]["selected"] is None
