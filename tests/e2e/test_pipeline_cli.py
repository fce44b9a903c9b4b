"""The pipeline through launch/submit.py with the local launcher, as a user runs it."""
from __future__ import annotations

import json

import pytest
from cli import FAST, stage_dir, stage_metrics, submit
from safetensors import safe_open

pytestmark = pytest.mark.slow

# The foundation's stages; disposal and the attack side have their own end-to-end tests.
CORE = [*FAST, "stages=[pretrain,transfer,evaluate]"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("out")
    proc = submit("+exp=demo", f"out_root={out}", *CORE, data_root=data_root)
    return out, out / "demo", proc


def test_demo_runs_every_stage_and_writes_outputs(demo_run):
    out, exp, proc = demo_run
    assert f"experiment {exp}" in proc.stdout and "tensorboard --logdir" in proc.stdout
    metrics = stage_metrics(exp)
    assert set(metrics) == {"pretrain", "transfer", "tgt", "evaluate/transfer", "evaluate/tgt"}
    assert all(m["status"] == "done" for m in metrics.values())
    assert set(metrics["evaluate/transfer"]["acc"]) == {"source", "target"}
    assert set(metrics["evaluate/tgt"]["acc"]) == {"target"}  # trained from scratch: it has no source head
    assert metrics["evaluate/transfer"]["model_labels"] == {"method": "tl"}
    assert metrics["evaluate/tgt"]["model_labels"] == {"method": "tgt"}
    assert metrics["evaluate/tgt"]["attack_labels"] == {"evaluates": "tgt"}
    for name in ("pretrain", "transfer", "tgt"):
        d = stage_dir(exp, name)
        assert (d / "model.safetensors").exists()
        assert list((d / "tensorboard").glob("events.out.tfevents.*"))
        assert not (d / "checkpoint").exists()  # resume state is dropped once the stage is done
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            assert json.loads(f.metadata()["trd"])["name"] == "cnn"
    assert (stage_dir(exp, "transfer") / "source_head.safetensors").exists()
    assert (exp / "config.yaml").exists() and (exp / "stages" / "pretrain").is_symlink()


def test_resubmission_reruns_nothing_and_a_new_experiment_reuses_pretraining(demo_run, data_root):
    out, exp, _ = demo_run
    before = {n: m for n, m in stage_metrics(exp).items()}
    again = submit("+exp=demo", f"out_root={out}", *CORE, data_root=data_root)
    assert "reused finished stages: " in again.stdout and "trd: jobs" not in again.stdout
    assert stage_metrics(exp) == before

    other = submit("+exp=demo", f"out_root={out}", "name=other", *CORE, "transfer.optim.lr=0.01", data_root=data_root)
    assert "reused finished stages: pretrain" in other.stdout
    assert stage_dir(out / "other", "pretrain") == stage_dir(exp, "pretrain")
    assert stage_dir(out / "other", "transfer") != stage_dir(exp, "transfer")
    assert stage_metrics(out / "other")["transfer"]["status"] == "done"


def test_unknown_key_in_config_is_a_one_line_error(tmp_path, data_root):
    proc = submit("+exp=demo", f"out_root={tmp_path}", "+pretrain.epochz=3", data_root=data_root, check=False)
    assert proc.returncode == 2
    assert "trd: error: unknown config key pretrain.epochz: pretrain takes" in proc.stderr
    assert not (tmp_path / "demo").exists()
    typo = submit("+exp=demo", f"out_root={tmp_path}", "pretrain.epochz=3", data_root=data_root, check=False)
    assert typo.returncode == 2  # without +: the same message, not Hydra's "not in struct"
    assert "trd: error: unknown config key pretrain.epochz: pretrain takes" in typo.stderr


def test_model_and_data_mismatch_is_a_one_line_error(tmp_path, data_root):
    proc = submit("+exp=demo", f"out_root={tmp_path}", "data.target.image_size=48", data_root=data_root, check=False)
    assert proc.returncode == 2
    assert "data.target.image_size=48 differs from data.source.image_size=32" in proc.stderr


def test_missing_shards_fail_at_submission_naming_pattern_and_fix(tmp_path, data_root):
    proc = submit("+exp=demo", f"out_root={tmp_path}", "data.target.embedded=null",
                  f"data.target.train='{tmp_path}/none/train-{{000000..000003}}.tar'", data_root=data_root, check=False)
    assert proc.returncode == 2
    error = proc.stderr[proc.stderr.index("trd: error: "):]
    assert error.startswith("trd: error: the shards of 1 data role are missing; create them, then submit again:")
    assert f"data.target.train: 4 of 4 shards of '{tmp_path}/none/train-{{000000..000003}}.tar' missing" in error
    assert f"python launch/make_shards.py <cifar10|cifar100|svhn|stl10|imagefolder> --root <raw data folder> " \
           f"--out {tmp_path}/none" in error
    assert "then, if it prints other patterns: data.target.train=\"'<the train pattern it prints>'\"" in error
    assert not (tmp_path / "demo").exists()


def test_embedded_class_count_mismatch_fails_at_submission(tmp_path, data_root):
    proc = submit("+exp=demo", f"out_root={tmp_path}", *CORE, "data.source.num_classes=5", data_root=data_root,
                  check=False)
    assert proc.returncode == 2
    assert "data.source.num_classes=5 but its data (synth_source) has 20 classes" in proc.stderr
    assert not (tmp_path / "demo").exists()


def test_failed_stage_is_reported_and_its_dependents_never_run(tmp_path, data_root):
    # Labels 0..19 with num_classes=5 in shards the config cannot vouch for (not generated by trd): the source
    # data does not fit the model, found while training.
    from trd.data import ensure_role_shards

    source = {"embedded": "synth_source", "train": f"{data_root}/synth_source/32px/train-{{000000..000003}}.tar",
              "test": f"{data_root}/synth_source/32px/test-{{000000..000001}}.tar", "num_classes": 20, "image_size": 32}
    ensure_role_shards(source)
    proc = submit("+exp=demo", f"out_root={tmp_path}", *CORE, "data.source.embedded=null",
                  "data.source.num_classes=5", data_root=data_root, check=False)
    assert proc.returncode == 1
    exp = tmp_path / "demo"
    metrics = {n: m for n, m in stage_metrics_or_none(exp).items()}
    assert metrics["pretrain"]["status"] == "failed"
    assert "num_classes" in metrics["pretrain"]["error"] and "\n" not in metrics["pretrain"]["error"]
    assert metrics["transfer"] is None and metrics["evaluate/transfer"] is None  # never started
    assert metrics["tgt"]["status"] == "done"  # independent of pretraining
    dispatched = json.loads((exp / "dispatch.json").read_text())
    assert dispatched["failed"] == ["pretrain"]
    assert set(dispatched["not_run"]) == {"transfer", "evaluate/transfer"}
    assert "pretrain" in proc.stdout and "failed" in proc.stdout and metrics["pretrain"]["log"] in proc.stdout


def stage_metrics_or_none(exp):
    from pathlib import Path

    plan = json.loads((exp / "plan.json").read_text())
    out = {}
    for name, s in plan["stages"].items():
        path = Path(s["dir"]) / "metrics.json"
        out[name] = json.loads(path.read_text()) if path.exists() else None
    return out


def test_two_rank_deepspeed_zero2_pretraining_with_gloo(tmp_path, data_root):
    proc = submit("+exp=demo", f"out_root={tmp_path}", "stages=[pretrain]", "pretrain.epochs=1",
                  "launcher.tasks_per_node=2", "deepspeed=zero2", data_root=data_root)
    metrics = stage_metrics(tmp_path / "demo")["pretrain"]
    assert metrics["status"] == "done" and metrics["world_size"] == 2
    # 4000 source images, global batch 64 split over 2 ranks: every rank runs the same 62 steps
    assert metrics["steps"] == metrics["steps_per_epoch"] == 4000 // 64
    assert metrics["acc"]["source"] > 1 / 20  # it learned something in one epoch
    assert "pretrain" in proc.stdout
