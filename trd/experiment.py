"""From a composed config to submitted jobs: plan, write the experiment dir, dispatch, say where things are."""
from __future__ import annotations

import dataclasses
import shlex
import sys
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trd import contract
from trd.atomic import atomic_write
from trd.config.nodes import DeepSpeedConfig, LauncherConfig
from trd.console import LiveView, snapshot
from trd.data.role import RoleSpec
from trd.data.role_config import all_missing_shards
from trd.dispatch import Dispatch, dispatch
from trd.metrics import read_metrics
from trd.plan import Plan, build_plan
from trd.stages import discover
from trd.summary import summary


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
    with all_missing_shards():
        return build_plan(resolve(cfg), discover(), per_experiment=per_experiment)


def _command_line() -> str | None:
    """How this experiment was submitted, to rerun what is not done; None when not from launch/submit.py."""
    if not sys.argv or Path(sys.argv[0]).name != "submit.py":
        return None
    return shlex.join(["python", "launch/submit.py", *sys.argv[1:]])


def launch(plan: Plan, exp_dir: Path, launcher: DictConfig, config_yaml: str | None = None) -> Dispatch:
    plan.write(exp_dir, config_yaml)
    command = _command_line()
    if command is not None:
        atomic_write(exp_dir / contract.COMMAND_FILE, lambda tmp: Path(tmp).write_text(command + "\n"))
    wait = launcher.get("wait")
    waits = launcher["name"] == "local" or bool(wait)
    print(f"trd: experiment {exp_dir} ({len(plan.stages)} stages)", flush=True)
    reused = {name for name, spec in plan.stages.items()
              if read_metrics(spec.dir).get("status") == contract.DONE}
    if reused:
        print(f"trd: reused finished stages: {', '.join(n for n in plan.stages if n in reused)}", flush=True)
    view = LiveView(exp_dir, reused=reused) if waits else None
    try:
        result = dispatch(plan, exp_dir, launcher, wait=wait, on_poll=view.update if view else None)
    finally:
        if view is not None:
            view.close()
    if result.jobs and launcher["name"] != "local":
        print("trd: jobs " + ", ".join(f"{n}={j}" for n, j in result.jobs.items()), flush=True)
    if waits:
        rows = snapshot(exp_dir, reused)
        for row in rows:  # never submitted: the console cannot tell them from stages still to come
            if row["stage"] in result.not_run and row["status"] == contract.PENDING:
                row["status"], row["error"] = "not run", "an input stage failed"
        print(summary(exp_dir, rows), flush=True)
    else:
        print(f"trd: submitted; watch the jobs with: python launch/status.py {shlex.quote(str(exp_dir))} --watch")
        print(f"trd: TensorBoard: tensorboard --logdir {shlex.quote(str(exp_dir / contract.STAGE_LINKS))}")
    return result


def run(cfg: DictConfig) -> Dispatch:
    plan = plan_experiment(cfg)
    return launch(plan, experiment_dir(cfg), cfg.launcher, OmegaConf.to_yaml(cfg, resolve=True))
