import json

import pytest

from trd.config import ConfigError
from trd.plan import Plan, StageKind, build_plan, merge_points


def _noop(*args):
    return {}


KINDS = {k.name: k for k in [
    StageKind("pretrain", _noop, _noop),
    StageKind("transfer", _noop, _noop, releases_models=True, inputs=("pretrained",)),
    StageKind("evaluate", _noop, _noop, reported=True, inputs=("model",), attack_labels=("evaluates",)),
    StageKind("report", _noop, _noop, per_experiment=True, inputs=("*",)),
]}


def _toy_plan(root, lr=0.1, seed=0, kinds=KINDS):
    plan = Plan(root, kinds)
    plan.add("pretrain", "pretrain", {"lr": 0.1, "seed": seed})
    plan.add("transfer", "transfer", {"lr": lr}, inputs={"pretrained": "pretrain"}, model={"method": "tl"})
    plan.add("tgt", "transfer", {"lr": lr, "init": "scratch"}, model={"method": "tgt"})
    plan.add("evaluate/transfer", "evaluate", {}, inputs={"model": "transfer"}, model={"method": "tl"},
             attack={"evaluates": "transfer"})
    return plan


def test_hash_depends_on_config_inputs_labels_and_kind_version_only(tmp_path):
    a, b = _toy_plan(tmp_path), _toy_plan(tmp_path)
    assert {n: s.hash for n, s in a.stages.items()} == {n: s.hash for n, s in b.stages.items()}
    c = _toy_plan(tmp_path, lr=0.2)
    assert c["pretrain"].hash == a["pretrain"].hash
    assert c["transfer"].hash != a["transfer"].hash
    # a changed input changes every dependent, even with the same own config
    d = _toy_plan(tmp_path, seed=1)
    assert d["transfer"].hash != a["transfer"].hash
    assert a["transfer"].dir == tmp_path.resolve() / "stages" / f"transfer-{a['transfer'].hash}"
    # a new version of one kind recomputes that kind (and what reads it), not the others
    bumped = {**KINDS, "transfer": StageKind("transfer", _noop, _noop, version=2, releases_models=True,
                                             inputs=("pretrained",))}
    e = _toy_plan(tmp_path, kinds=bumped)
    assert e["pretrain"].hash == a["pretrain"].hash
    assert e["transfer"].hash != a["transfer"].hash and e["evaluate/transfer"].hash != a["evaluate/transfer"].hash


def test_lineage_leaves_seeds_out_all_the_way_up(tmp_path):
    a, b = _toy_plan(tmp_path), _toy_plan(tmp_path, seed=1)
    assert a["transfer"].hash != b["transfer"].hash
    assert a["transfer"].lineage == b["transfer"].lineage
    assert a["evaluate/transfer"].lineage == b["evaluate/transfer"].lineage
    assert _toy_plan(tmp_path, lr=0.2)["transfer"].lineage != a["transfer"].lineage


def test_waves_follow_dependencies(tmp_path):
    waves = _toy_plan(tmp_path).waves()
    assert [sorted(s.name for s in w) for w in waves] == [["pretrain", "tgt"], ["transfer"], ["evaluate/transfer"]]


def test_released_and_reported_come_from_the_kinds(tmp_path):
    plan = _toy_plan(tmp_path)
    assert [s.name for s in plan.released()] == ["transfer", "tgt"]
    assert [s.name for s in plan.reported()] == ["evaluate/transfer"]


def test_unknown_input_undeclared_labels_and_name_clash_are_errors(tmp_path):
    plan = Plan(tmp_path, KINDS)
    with pytest.raises(ConfigError, match="needs stage 'pretrain'"):
        plan.add("transfer", "transfer", {}, inputs={"pretrained": "pretrain"})
    plan.add("x", "pretrain", {"a": 1})
    with pytest.raises(ConfigError, match="both named 'x'"):
        plan.add("x", "pretrain", {"a": 2})
    with pytest.raises(ValueError, match="takes inputs"):
        plan.add("y", "transfer", {}, inputs={"model": "x"})
    with pytest.raises(ValueError, match="declares attack labels"):
        plan.add("z", "evaluate", {}, attack={"scheme": "s"})


def test_build_plan_refuses_unknown_and_repeated_kinds(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage 'nope' in stages: use some of evaluate, pretrain"):
        build_plan({"out_root": str(tmp_path), "stages": ["pretrain", "nope"]}, KINDS)
    with pytest.raises(ConfigError, match="lists a stage kind twice"):
        build_plan({"out_root": str(tmp_path), "stages": ["pretrain", "pretrain"]}, KINDS)


def test_merge_shares_equal_stages_renames_differing_ones_and_records_their_point(tmp_path):
    merged = merge_points({"stages": []}, [_toy_plan(tmp_path, lr=0.1), _toy_plan(tmp_path, lr=0.2)],
                          ["transfer.lr=0.1", "transfer.lr=0.2"])
    names = sorted(merged.stages)
    assert "pretrain[transfer.lr=0.2]" not in names  # same hash: one stage
    assert "transfer[transfer.lr=0.2]" in names
    assert merged["evaluate/transfer[transfer.lr=0.2]"].inputs == {"model": "transfer[transfer.lr=0.2]"}
    assert len(merged.stages) == 7
    assert merged["pretrain"].sweep == ""  # shared by both points
    assert merged["transfer"].sweep == "transfer.lr=0.1"
    assert merged["transfer[transfer.lr=0.2]"].sweep == "transfer.lr=0.2"


def test_write_creates_stage_specs_links_and_plan(tmp_path):
    plan = _toy_plan(tmp_path / "out")
    exp = plan.write(tmp_path / "out" / "exp", "name: x\n")
    spec = json.loads((plan["transfer"].dir / "stage.json").read_text())
    assert spec["inputs"] == {"pretrained": str(plan["pretrain"].dir)}
    assert spec["kind_version"] == 1 and spec["planned_with"]["trd"]
    assert (exp / "stages" / "evaluate" / "transfer").resolve() == plan["evaluate/transfer"].dir
    written = json.loads((exp / "plan.json").read_text())
    assert written["format"] == 2
    stage = written["stages"]["evaluate/transfer"]
    assert stage["model_labels"] == {"method": "tl"} and stage["attack_labels"] == {"evaluates": "transfer"}
    assert stage["reported"] and stage["lineage"] == plan["evaluate/transfer"].lineage
    assert (exp / "config.yaml").read_text() == "name: x\n"


def test_checkpoint_frequency_does_not_change_the_hash(tmp_path):
    a, b = Plan(tmp_path, KINDS), Plan(tmp_path, KINDS)
    a.add("pretrain", "pretrain", {"train": {"epochs": 2, "checkpoint_every": 5}})
    b.add("pretrain", "pretrain", {"train": {"epochs": 2, "checkpoint_every": 500}})
    assert a["pretrain"].hash == b["pretrain"].hash


def test_sweep_points_are_named_by_their_swept_overrides_only():
    from trd.sweep import point_names

    points = [["+exp=demo", "out_root=/x", "transfer.optim.lr=0.01"], ["+exp=demo", "out_root=/x", "transfer.optim.lr=0.02"]]
    assert point_names(points) == ["transfer.optim.lr=0.01", "transfer.optim.lr=0.02"]


def test_a_merged_sweep_plans_its_per_experiment_kinds_once_over_every_point(tmp_path):
    def plan_report(cfg, plan):
        plan.add("report", "report", {}, inputs={s.name: s.name for s in plan.reported()})

    kinds = {**KINDS, "report": StageKind("report", plan_report, _noop, per_experiment=True, inputs=("*",))}
    merged = merge_points({"stages": ["pretrain", "report"]},
                          [_toy_plan(tmp_path, lr=0.1, kinds=kinds), _toy_plan(tmp_path, lr=0.2, kinds=kinds)],
                          ["lr=0.1", "lr=0.2"])
    reports = merged.of_kind("report")
    assert [r.name for r in reports] == ["report"]
    assert set(reports[0].inputs) == {"evaluate/transfer", "evaluate/transfer[lr=0.2]"}
    assert list(merged.stages)[-1] == "report"  # still last: stages stay in dependency order
