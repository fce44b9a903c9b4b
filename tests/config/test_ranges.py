"""Every numeric key of every stage kind's config node, of a data role, of the launcher and of DeepSpeed has an
allowed range, and a value outside it fails at submission with one line naming the key and the value, before
anything is written under out_root."""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir

from trd.config import ConfigError
from trd.config.nodes import DataOptions, DeepSpeedConfig, LauncherConfig
from trd.data.role import RoleSpec
from trd.experiment import plan_experiment
from trd.stages import discover

REPO = Path(__file__).resolve().parents[2]
DEMO = ["+exp=demo", "stages=[pretrain,transfer,dispose,evaluate,piggyback,mia,report]"]
# The experiment that plans a kind's stages, for the kinds the demo does not run.
EXPERIMENT = {**{kind: ["+exp=resist_demo", "stages=[plain,skd,reverse_maml,unsir]"]
                 for kind in ("plain", "skd", "reverse_maml", "unsir")},
              **{kind: ["+exp=cartl_demo"] for kind in ("robust_pretrain", "robust_transfer", "pgd", "agnostic")},
              "renofeation": ["+exp=renofeation_demo"]}
# Keys whose every value of their type is allowed: seeds, and a channel mean (any real number).
UNBOUNDED = ("seed", "seeds", "fraction_seed", "part_seed", "mean")
# A dict of nodes is tried through the entry the demo has.
DICT_ENTRY = {"piggyback.schemes": "finetune"}


def _numeric(tp) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if typing.get_origin(tp) is list:
        args = typing.get_args(tp)
    return any(a in (int, float) for a in args)


def _node_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if dataclasses.is_dataclass(tp):
        return tp
    if len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def numeric_keys(cls, where: str):
    """(dotted key, rule) for every numeric field under a schema; fails for a numeric field without a rule."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = f"{where}.{f.name}", hints[f.name]
        if _node_type(tp):
            yield from numeric_keys(_node_type(tp), key)
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            yield from numeric_keys(typing.get_args(tp)[1], f"{key}.{DICT_ENTRY[key]}")
        elif _numeric(tp) and f.name not in UNBOUNDED:
            assert f.metadata.get("rule") is not None, f"{key} is numeric but has no allowed range"
            yield key, f.metadata["rule"]


def all_numeric_keys():
    nodes = [(kind.schema, name) for name, kind in sorted(discover().items()) if kind.schema]
    nodes += [(RoleSpec, "data.source"), (RoleSpec, "data.target"), (RoleSpec, "data.piggyback.synth"),
              (DataOptions, "data"), (DeepSpeedConfig, "deepspeed"), (LauncherConfig, "launcher")]
    return [pair for cls, where in nodes for pair in numeric_keys(cls, where)]


def _hydra_value(value) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def _plan(out_root: Path, *overrides: str, experiment: list[str] = DEMO):
    # Only while planning: the test's folder is removed when it passes, and later tests of this worker must not
    # resolve their data there.
    with mock.patch.dict(os.environ, {"TRD_DATA": os.environ.get("TRD_DATA", str(out_root.parent / "data"))}):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*experiment, f"out_root={out_root}", *overrides])
        return plan_experiment(cfg)


KEYS = all_numeric_keys()


def test_the_table_covers_every_stage_kind_with_a_config_node():
    covered = {key.split(".")[0] for key, _ in KEYS}
    assert {"pretrain", "transfer", "dispose", "piggyback", "mia", "data", "launcher", "deepspeed"} <= covered
    assert len(KEYS) > 60


@pytest.mark.parametrize("key, rule", KEYS, ids=[key for key, _ in KEYS])
def test_out_of_range_value_fails_at_submission_naming_the_key(tmp_path, key, rule):
    out = tmp_path / "out"
    override = f"++{key}={_hydra_value(rule.outside)}"  # ++: also the keys the YAML leaves at their default
    with pytest.raises(ConfigError) as err:
        _plan(out, override, experiment=EXPERIMENT.get(key.split(".")[0], DEMO))
    message = str(err.value)
    assert f"{key}=" in message and "\n" not in message, message
    assert rule.allowed in message or "must be" in message, message
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("overrides, message", [
    (["transfer.mode=last_k", "transfer.k=99"], "transfer.k=99 is out of range: the model has 3 blocks"),
    (["transfer.mode=last_k", "transfer.k=null"], "transfer.mode=last_k needs transfer.k >= 1"),
    (["transfer.mode=probe"], "transfer.mode='probe' is not known: use one of full, last_k, linear"),
    (["piggyback.schemes.finetune.mode=last_k", "+piggyback.schemes.finetune.k=5"],
     "piggyback.schemes.finetune.k=5 is out of range: the model has 3 blocks"),
    (["dispose.batch_size=30"], "dispose.batch_size=30 must split into 1 rank(s) x dispose.chunks=4 equal chunks"),
    (["dispose.methods=[]"], "dispose.methods is empty"),
    (["dispose.methods=[gc,gc]"], "dispose.methods=['gc', 'gc'] repeats a method"),
    (["dispose.input=nope"], "dispose.input='nope' is not a released model of this plan: use one of transfer, tgt"),
    (["dispose.retain=nope"], "dispose.retain='nope' is out of range: it must be one of src-kd"),
    (["dispose.lam=abc"], "dispose.lam='abc' must be a number"),
    (["data.target.holdout=0"], "dispose.target_budget=2 needs a validation slice of the target's train split: set "
                                "data.target.holdout"),
    (["dispose.nft.momentum_lr=[0.1,0.01]"], "dispose.nft: learning-rate range of momentum [0.1, 0.01] must have 0 < "
                                             "low <= high"),
    (["dispose.nft.steps=[4]"], "dispose.nft.steps=[4] must be [low, high]"),
    (["dispose.hvp=finite_difference", "deepspeed.precision=bf16"],
     "dispose.hvp=finite_difference needs float32 weights, not deepspeed.precision=bf16: set deepspeed.precision=fp32"),
    (["dispose.hvp=approximate"], "dispose.hvp='approximate' is out of range: it must be one of exact, finite_difference"),
    (["report.reference=nope"], "report.reference='nope' names no model of this plan"),
    (["+dispose.lamda=0.5"], "unknown config key dispose.lamda: dispose takes"),
    (["+model.width=0"], "model: cnn: width must be >= 1, got 0"),
    (["+model.depth=3"], "model: cnn: unknown option(s) ['depth']"),
    (["data.target.image_size=48"], "data.target.image_size=48 differs from data.source.image_size=32"),
])
def test_rules_across_keys_fail_at_submission(tmp_path, overrides, message):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        _plan(out, *overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() or not any(out.iterdir())
