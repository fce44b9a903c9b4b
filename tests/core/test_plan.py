import json

import pytest

from trd.plan import ConfigError, Plan, take


def _toy_plan(root, lr=0.1):
    plan = Plan(root)
    plan.add("pretrain", "pretrain", {"lr": 0.1})
    plan.add("transfer", "transfer", {"lr": lr}, inputs={"pretrained": "pretrain"}, labels={"method": "tl"})
    plan.add("tgt", "transfer", {"lr": lr, "init": "scratch"}, labels={"method": "tgt"})
    plan.add("evaluate/transfer", "evaluate", {}, inputs={"model": "transfer"})
    return plan


def test_hash_depends_on_config_inputs_and_labels_only(tmp_path):
    a, b = _toy_plan(tmp_path), _toy_plan(tmp_path)
    assert {n: s.hash for n, s in a.stages.items()} == {n: s.hash for n, s in b.stages.items()}
    c = _toy_plan(tmp_path, lr=0.2)
    assert c["pretrain"].hash == a["pretrain"].hash
    assert c["transfer"].hash != a["transfer"].hash
    # a changed input changes every dependent, even with the same own config
    d = Plan(tmp_path)
    d.add("pretrain", "pretrain", {"lr": 0.3})
    d.add("transfer", "transfer", {"lr": 0.1}, inputs={"pretrained": "pretrain"}, labels={"method": "tl"})
    assert d["transfer"].hash != a["transfer"].hash
    assert a["transfer"].dir == tmp_path.resolve() / "stages" / f"transfer-{a['transfer'].hash}"


def test_waves_follow_dependencies(tmp_path):
    waves = _toy_plan(tmp_path).waves()
    assert [sorted(s.name for s in w) for w in waves] == [["pretrain", "tgt"], ["transfer"], ["evaluate/transfer"]]


def test_unknown_input_and_name_clash_are_errors(tmp_path):
    plan = Plan(tmp_path)
    with pytest.raises(ConfigError, match="needs stage 'pretrain'"):
        plan.add("transfer", "transfer", {}, inputs={"pretrained": "pretrain"})
    plan.add("x", "pretrain", {"a": 1})
    with pytest.raises(ConfigError, match="both named 'x'"):
        plan.add("x", "pretrain", {"a": 2})


def test_merge_shares_equal_stages_and_renames_differing_ones(tmp_path):
    a, b = _toy_plan(tmp_path, lr=0.1), _toy_plan(tmp_path, lr=0.2)
    a.merge(b, "transfer.lr=0.2")
    names = sorted(a.stages)
    assert "pretrain[transfer.lr=0.2]" not in names  # same hash: one stage
    assert "transfer[transfer.lr=0.2]" in names
    assert a["evaluate/transfer[transfer.lr=0.2]"].inputs == {"model": "transfer[transfer.lr=0.2]"}
    assert len(a.stages) == 7


def test_write_creates_stage_specs_links_and_plan(tmp_path):
    plan = _toy_plan(tmp_path / "out")
    exp = plan.write(tmp_path / "out" / "exp", "name: x\n")
    spec = json.loads((plan["transfer"].dir / "stage.json").read_text())
    assert spec["inputs"] == {"pretrained": str(plan["pretrain"].dir)}
    assert (exp / "stages" / "evaluate" / "transfer").resolve() == plan["evaluate/transfer"].dir
    assert json.loads((exp / "plan.json").read_text())["stages"]["tgt"]["labels"] == {"method": "tgt"}
    assert (exp / "config.yaml").read_text() == "name: x\n"


def test_take_refuses_unknown_keys():
    assert take({"epochs": 1}, ("epochs", "lr"), "pretrain") == {"epochs": 1}
    with pytest.raises(ConfigError, match=r"unknown config key pretrain\.epochz: pretrain takes epochs, lr"):
        take({"epochz": 1}, ("epochs", "lr"), "pretrain")


def test_checkpoint_frequency_does_not_change_the_hash(tmp_path):
    a, b = Plan(tmp_path), Plan(tmp_path)
    a.add("pretrain", "pretrain", {"train": {"epochs": 2, "checkpoint_every": 5}})
    b.add("pretrain", "pretrain", {"train": {"epochs": 2, "checkpoint_every": 500}})
    assert a["pretrain"].hash == b["pretrain"].hash


def test_sweep_points_are_named_by_their_swept_overrides_only():
    from trd.sweep import point_names

    points = [["+exp=demo", "out_root=/x", "transfer.optim.lr=0.01"], ["+exp=demo", "out_root=/x", "transfer.optim.lr=0.02"]]
    assert point_names(points) == ["transfer.optim.lr=0.01", "transfer.optim.lr=0.02"]


def test_a_merged_sweep_has_one_report_over_every_point(tmp_path):
    from trd.stages.report import REPORTED_KINDS
    from trd.sweep import merge_points

    def point(lr):
        plan = _toy_plan(tmp_path, lr=lr)
        plan.add("report", "report", {"exp_dir": str(tmp_path / "exp")},
                 inputs={s.name: s.name for s in plan.of_kind(*REPORTED_KINDS)})
        return plan

    merged = merge_points([point(0.1), point(0.2)], ["lr=0.1", "lr=0.2"])
    reports = merged.of_kind("report")
    assert [r.name for r in reports] == ["report"]
    assert set(reports[0].inputs) == {"evaluate/transfer", "evaluate/transfer[lr=0.2]"}
    assert list(merged.stages)[-1] == "report"  # still last: stages stay in dependency order
