"""The robust-transfer experiments plan at submission, and their bad inputs stop there with one line naming the
key and the fix, before anything is written under out_root."""
from __future__ import annotations

import pytest

from trd.config import ConfigError


def test_the_demo_transfers_every_source_model_by_each_method_and_attacks_every_released_model(tmp_path, plan_exp):
    plan = plan_exp("cartl_demo", tmp_path)
    assert plan["robust_pretrain/pgd_at"].model == {"method": "pgd_at"}
    assert plan["robust_pretrain/fdm_lam0.01"].config["k"] == 1
    sources = {"pretrain": {"source": "natural"}, "robust_pretrain_pgd_at": {"source": "pgd_at"},
               "robust_pretrain_fdm_lam0.01": {"source": "fdm", "lam": 0.01}}
    for source, labels in sources.items():
        for method in ("tl", "neft"):
            name = f"robust_transfer/{source}/{method}"
            assert plan[name].model == {"method": method, **labels}
            assert plan[f"pgd/{name}"].attack == {"attacks": name, "attack": "pgd"}
            assert plan[f"agnostic/{name}"].inputs == {"model": name, "public": "pretrain"}
    assert plan["robust_transfer/pretrain/tl"].inputs == {"pretrained": "pretrain"}
    assert not (tmp_path / "cartl_demo").exists()


@pytest.mark.parametrize("overrides,message", [
    (["robust_transfer.k=4", "robust_pretrain.k=1"], "robust_transfer.k=4 is out of range: the model has 3 blocks"),
    (["robust_pretrain.k=3"], "robust_pretrain.k=3 leaves no frozen block for the feature distance"),
    (["pgd.eps=1.5"], "pgd.eps=1.5"),
    (["robust_pretrain.attack.eps=-0.1"], "robust_pretrain.attack.eps=-0.1"),
    (["robust_transfer.beta=0"], "robust_transfer.beta=0"),
    (["robust_transfer.beta=-1"], "robust_transfer.beta=-1"),
    (["agnostic.layer=block7"], "agnostic.layer='block7' is not a layer of cnn: use one of stem, block0, block1, "
                                "features"),
    (["agnostic.neuron=128"], "agnostic.neuron=128 is out of range"),
    (["stages=[robust_pretrain,robust_transfer,agnostic]", "robust_transfer.sources=[robust_pretrain]"],
     "agnostic.public='pretrain' is not a stage of this plan"),
    (["stages=[robust_pretrain,robust_transfer]"], "robust_transfer.sources names 'pretrain', which has no stage"),
    (["stages=[pretrain,pgd]"], "stage pgd has no model to attack: put a releasing stage (transfer, ...) before it"),
    (["stages=[pretrain,agnostic]"], "stage agnostic has no model to attack"),
    (["robust_transfer.methods=[tl,ft]"], "robust_transfer.methods"),
    (["robust_transfer.bn_stats=freeze"], "robust_transfer.bn_stats"),
    (["robust_pretrain.lams=[0.0,0.0]"], "robust_pretrain.lams=[0.0, 0.0] must list each lam once"),
    (["pgd.steps=[]"], "pgd.steps=[] must list each step count once"),
])
def test_bad_input_is_one_line_at_submission(tmp_path, plan_exp, overrides, message):
    with pytest.raises(ConfigError) as err:
        plan_exp("cartl_demo", tmp_path, *overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cartl_demo").exists()


@pytest.mark.parametrize("exp", ["cartl_cifar100_cifar10", "cartl_cifar10_svhn", "cartl_cifar100_svhn"])
def test_each_study_case_plans_three_sources_by_three_methods_attacked_by_pgd_20_and_100(tmp_path, monkeypatch,
                                                                                         plan_exp, exp):
    monkeypatch.setenv("TRD_DATA", str(tmp_path / "data"))
    plan = plan_exp(exp, tmp_path / "out", placeholder_shards=True)
    released = [s.name for s in plan.released()]
    assert len(released) == 9 and all(f"pgd/{name}" in plan for name in released)
    assert plan["robust_pretrain/fdm_lam0.01"].config["attack"]["steps"] == 7
    assert plan[f"pgd/{released[0]}"].config["pgd"]["steps"] == [20, 100]
    assert plan["robust_transfer/pretrain/lwf"].config["target"]["fraction"] in (None, 1.0)
