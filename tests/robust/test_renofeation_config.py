"""The Renofeation experiments plan at submission: every method released and attacked through the public model,
the ablation's variants labelled, and bad input one line before anything is written."""
from __future__ import annotations

import pytest

from trd.config import ConfigError


def test_every_method_is_released_and_attacked_through_the_public_model(tmp_path, plan_exp):
    plan = plan_exp("renofeation_demo", tmp_path)
    for method in ("linear", "finetune", "l2sp", "delta", "scratch", "renofeation"):
        name = f"renofeation/{method}"
        assert plan[name].model == {"method": method}
        assert plan[f"agnostic/{name}"].inputs == {"model": name, "public": "pretrain"}
    assert plan["renofeation/scratch"].inputs == {}  # nothing of the public model goes into it
    assert plan["renofeation/renofeation"].inputs == {"pretrained": "pretrain"}
    recipe = plan["renofeation/renofeation"].config["recipe"]
    assert recipe == {"init": "scratch", "linear": False, "l2sp": False, "distill": True, "dropout": True, "swa": True}
    assert plan["renofeation/delta"].config["distill_blocks"] == ["stem", "block0", "block1"]
    assert "distill_weight" not in plan["renofeation/finetune"].config  # a distillation setting reruns no finetune
    assert "swa" in plan["renofeation/renofeation"].config and "l2sp_alpha" in plan["renofeation/l2sp"].config


def test_the_ablation_adds_dropout_and_swa_to_the_baselines(tmp_path, plan_exp):
    plan = plan_exp("renofeation_demo", tmp_path, "renofeation.ablation=true")
    assert plan["renofeation/finetune+dropout+swa"].model == {"method": "finetune", "dropout": True, "swa": True}
    assert plan["renofeation/finetune+dropout+swa"].config["recipe"]["swa"] is True
    assert "renofeation/linear+dropout+swa" not in plan and "renofeation/renofeation+dropout+swa" not in plan


def test_a_student_of_another_architecture_is_paired_by_resolution_in_the_scratch_methods_only(tmp_path, plan_exp):
    plain = plan_exp("renofeation_demo", tmp_path)
    plan = plan_exp("renofeation_demo", tmp_path, "renofeation.student={name:mobilenet_v2,width:0.25}")
    # the public model is cnn: stem at 16x16, block0 and block1 at 8x8; mobilenet_v2's CIFAR stem keeps 32x32 up
    # to blocks.3, then halves at blocks.4 (16x16) and blocks.7 (8x8)
    assert plan["renofeation/renofeation"].config["distill_pairs"] == [["blocks.6", "stem"], ["blocks.13", "block1"]]
    assert plan["renofeation/renofeation"].config["student"] == {"name": "mobilenet_v2", "width": 0.25}
    assert plan["renofeation/renofeation"].config["model"] == {"name": "cnn", "hidden": 128}  # the public model's
    assert plan["renofeation/scratch"].config["student"] == {"name": "mobilenet_v2", "width": 0.25}
    assert "distill_pairs" not in plan["renofeation/scratch"].config
    for method in ("linear", "finetune", "l2sp", "delta"):  # started from the public weights: its architecture
        assert plan[f"renofeation/{method}"].config == plain[f"renofeation/{method}"].config
        assert plan[f"renofeation/{method}"].hash == plain[f"renofeation/{method}"].hash


@pytest.mark.parametrize("overrides,message", [
    (["stages=[renofeation,report]"], "renofeation.public='pretrain' is not a stage of this plan"),
    (["renofeation.distill_blocks=[block9]"], "renofeation.distill_blocks=['block9'] must name blocks of cnn"),
    (["renofeation.methods=[finetune,finetune]"], "renofeation.methods=['finetune', 'finetune'] must list each"),
    (["renofeation.methods=[lwf]"], "renofeation.methods"),
    (["renofeation.dropout=1.0"], "renofeation.dropout=1.0"),
    (["renofeation.student={width:16}"], "renofeation.student={'width': 16} must be a model node with a name"),
    (["renofeation.student={name:vit}"], "renofeation.student: vit's block embed gives"),
    (["renofeation.student={name:cnn,width:0}"], "renofeation.student: cnn: width must be >= 1"),
    (["renofeation.student={name:resnet18,stem:imagenet}", "renofeation.distill_blocks=[stem]"],
     "renofeation.student: cnn's block stem is 16x16; resnet18 has no block of that size"),
])
def test_bad_input_is_one_line_at_submission(tmp_path, plan_exp, overrides, message):
    with pytest.raises(ConfigError) as err:
        plan_exp("renofeation_demo", tmp_path, *overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "renofeation_demo").exists()
