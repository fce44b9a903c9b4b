"""The DTL paper's three setups plan their whole pipeline: TL, TGT, GC and the three baselines, each
released model attacked on every piggyback task, MIA and the report."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trd.data.urls import expand_urls
from trd.experiment import plan_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

SETUPS = {
    "gc_cifar100_cifar10": {"cifar100_10": 100, "svhn_1": 10},
    "gc_cifar100_stl10": {"cifar100_10": 100, "tinyimagenet_6": 200},
    "gc_tinyimagenet": {"tinyimagenet_10": 200, "stl10_10": 10},
}
DISPOSED = ["dispose/gc", "dispose/rand", "dispose/unif", "dispose/neg"]


@pytest.mark.parametrize("exp", sorted(SETUPS))
def test_paper_setup_plans_every_method_attacked_on_every_task(exp, tmp_path, monkeypatch):
    monkeypatch.setenv("TRD_DATA", str(tmp_path / "data"))
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+exp={exp}", f"out_root={tmp_path}"])
    # Planning checks that every shard of every role exists (a missing one fails at submission); it reads none.
    data = cfg.data
    for role in [data.source, data.target, *data.piggyback.values()]:
        for url in [*expand_urls(role.train), *expand_urls(role.test)]:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            Path(url).touch()
    plan = plan_experiment(cfg)
    names = set(plan.stages)
    assert {"pretrain", "transfer", "tgt", *DISPOSED, "report"} <= names
    released = ["transfer", "tgt", *DISPOSED]
    for model in released:
        assert f"evaluate/{model}" in names and f"mia/{model}" in names
    for task, num_classes in SETUPS[exp].items():
        for model in [*released, "scratch"]:
            stage = plan[f"piggyback/{model}/{task}/finetune/s0"]
            assert stage.config["task"]["num_classes"] == num_classes
            assert str(tmp_path / "data") in stage.config["task"]["train"]
    assert plan["dispose/gc"].model == {"method": "gc", "lam": 0.5, "retain": "src-kd", "chunks": 4,
                                         "chunking": "class", "kd_head": "target"}
    # One transfer stage feeds every disposal: a lam sweep reuses it.
    assert {plan[name].inputs["released"] for name in DISPOSED} == {"transfer"}
