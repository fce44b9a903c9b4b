"""The transfer-resistant experiments plan at submission, and their bad inputs stop there with one line."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trd.config import ConfigError
from trd.data.urls import expand_urls
from trd.experiment import plan_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = ["plain", "skd", "reverse_maml", "unsir"]


def _cfg(tmp_path, exp="resist_demo", *overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+exp={exp}", f"out_root={tmp_path}", *overrides])


def test_the_demo_plans_every_method_attacked_by_the_probe_and_attack_mit_adds_full_fine_tuning(tmp_path):
    plan = plan_experiment(_cfg(tmp_path))
    for method in METHODS:
        assert plan[method].model == {"method": method}
        assert f"evaluate/{method}" in plan
        for seed in (0, 1, 2):
            assert f"piggyback/{method}/malicious/mit/s{seed}" in plan
        assert f"piggyback/{method}/malicious/finetune/s0" not in plan
    assert plan["skd"].inputs == {"teacher": "plain"} and plan["reverse_maml"].inputs == {"init": "plain"}
    assert plan.settings["report"]["reference"] == "plain"
    attacker = plan["piggyback/plain/malicious/mit/s0"].config["task"]
    defender = plan["unsir"].config["malicious"]
    assert attacker["classes"] == defender["classes"] and attacker["part"] == [0.8, 1.0] and defender["part"] == [0.0, 0.8]
    assert plan["evaluate/plain"].config["roles"]["target"] == plan["plain"].config["source"]
    both = plan_experiment(_cfg(tmp_path, "resist_demo", "attack=mit"))
    assert both["piggyback/skd/malicious/finetune/s2"].config["scheme"]["mode"] == "full"


def test_the_cifar10_split_plans_the_studys_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("TRD_DATA", str(tmp_path / "data"))
    cfg = _cfg(tmp_path, "resist_cifar10_split")
    for role in [cfg.data.source, cfg.data.malicious]:
        for url in [*expand_urls(role.train), *expand_urls(role.test)]:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            Path(url).touch()
    plan = plan_experiment(cfg)
    assert plan["plain"].config["source"]["classes"] == [0, 1, 2, 3, 4]
    assert plan["unsir"].config["malicious"]["classes"] == [5, 6, 7, 8, 9]
    scheme = plan["piggyback/skd/malicious/mit/s4"].config["scheme"]
    assert (scheme["mode"], scheme["optim"]["name"], scheme["optim"]["lr"]) == ("linear", "adam", [0.1])


@pytest.mark.parametrize("overrides, message", [
    (["data.malicious.classes=[9,10,11,12,13,14,15,16,17,18]"], r"data.malicious.classes=.* shares \[9\] with data.source"),
    (["~data.malicious.classes", "data.malicious.num_classes=20"], "data.malicious keeps every class"),
    (["~data.malicious"], "data.malicious is not configured"),
    (["data.malicious.image_size=16"], "data.malicious.image_size=16 differs from data.source.image_size=32"),
    (["reverse_maml.inner_steps=0"], "reverse_maml.inner_steps=0"),
    (["reverse_maml.inner.name=lamb"], "reverse_maml.inner.name='lamb'"),
    (["reverse_maml.bad_weight=0"], "needs both task kinds"),
    (["stages=[skd,evaluate]"], "skd distils the plain model: add plain before skd"),
    (["stages=[reverse_maml]"], "reverse_maml.init=plain starts from the plain model"),
    (["skd.constant=0.5"], r"skd.constant=0.5 .*in \[-1e\+06, 0\)"),
    (["model=vit", "~model.hidden", "stages=[plain,skd]"], "skd needs a model whose features follow a ReLU"),
])
def test_a_bad_resist_config_is_one_line_at_submission(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        plan_experiment(_cfg(tmp_path, "resist_demo", *overrides))
    assert "\n" not in str(err.value)
