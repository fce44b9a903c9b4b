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


@pytest.mark.parametrize("overrides,message", [
    (["stages=[renofeation,report]"], "renofeation.public='pretrain' is not a stage of this plan"),
    (["renofeation.distill_blocks=[block9]"], "renofeation.distill_blocks=['block9'] must name blocks of cnn"),
    (["renofeation.methods=[finetune,finetune]"], "renofeation.methods=['finetune', 'finetune'] must list each"),
    (["renofeation.methods=[lwf]"], "renofeation.methods"),
    (["renofeation.dropout=1.0"], "renofeation.dropout=1.0"),
])
def test_bad_input_is_one_line_at_submission(tmp_path, plan_exp, overrides, message):
    with pytest.raises(ConfigError) as err:
        plan_exp("renofeation_demo", tmp_path, *overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "renofeation_demo").exists()
