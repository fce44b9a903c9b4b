"""From a composed config to submitted jobs: plan, write the experiment dir, dispatch, say where things are."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trd.config.nodes import DeepSpeedConfig, LauncherConfig
from trd.data.role import RoleSpec
from trd.dispatch import Dispatch, dispatch
from trd.plan import Plan, build_plan
from trd.stages import discover
from trd.status import format_status, stage_rows


def schema_at(path: str) -> type | None:
    """The schema of the config node at a dotted path (a stage kind's node, a data role, the launcher...), or
    None where the node has none."""
    parts = path.split(".")
    kinds = discover()
    if parts[0] == "data":
        return RoleSpec if len(parts) == 2 or (len(parts) == 3 and parts[1] == "piggyback") else None
    roots = {"launcher": LauncherConfig, "deepspeed": DeepSpeedConfig,
             **{name: kind.schema for name, kind in kinds.items() if kind.schema}}
    schema, entries = roots.get(parts[0]), None
    for part in parts[1:]:
        if entries is not None:  # a table of nodes (piggyback.schemes): this part names an entry
            schema, entries = entries, None
            continue
        hint = typing.get_type_hints(schema).get(part) if schema is not None else None
        if typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1]):
            schema, entries = None, typing.get_args(hint)[1]
        else:
            schema = hint if dataclasses.is_dataclass(hint) else None
    return schema


def experiment_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.out_root)).resolve() / str(cfg.name)


def resolve(cfg: DictConfig) -> DictConfig:
    """Interpolations resolved and out_root absolute: what planning and the stage configs see."""
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    resolved.out_root = str(Path(str(resolved.out_root)).resolve())
    return resolved


def plan_experiment(cfg: DictConfig, per_experiment: bool = True) -> Plan:
    """The stage graph of a composed config; nothing is written. per_experiment=False leaves out the kinds
    planned once over a whole sweep (see trd.sweep)."""
    return build_plan(resolve(cfg), discover(), per_experiment=per_experiment)


def launch(plan: Plan, exp_dir: Path, launcher: DictConfig, config_yaml: str | None = None) -> Dispatch:
    plan.write(exp_dir, config_yaml)
    wait = launcher.get("wait")
    print(f"trd: experiment {exp_dir} ({len(plan.stages)} stages)", flush=True)
    result = dispatch(plan, exp_dir, launcher, wait=wait)
    if result.skipped:
        print(f"trd: reused finished stages: {', '.join(result.skipped)}")
    if result.jobs:
        print("trd: jobs " + ", ".join(f"{n}={j}" for n, j in result.jobs.items()))
    finished = launcher["name"] == "local" or wait
    if finished:
        rows = stage_rows(exp_dir)
        print(format_status(rows))
        logs = {r["stage"]: r["log"] for r in rows}
        for name in result.failed:
            print(f"trd: stage {name} failed; its log: {logs[name]}")
        for name in result.not_run:
            print(f"trd: stage {name} did not run because an input stage failed")
    else:
        print(f"trd: submitted; follow with: python launch/status.py {exp_dir}")
    print(f"trd: results in {exp_dir}   TensorBoard: tensorboard --logdir {exp_dir}/stages")
    return result


def run(cfg: DictConfig) -> Dispatch:
    plan = plan_experiment(cfg)
    return launch(plan, experiment_dir(cfg), cfg.launcher, OmegaConf.to_yaml(cfg, resolve=True))
