"""From a composed config to submitted jobs: plan, write the experiment dir, dispatch, say where things are."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trd.dispatch import Dispatch, dispatch
from trd.plan import Plan, build_plan
from trd.status import format_status, stage_rows


def experiment_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.out_root)).resolve() / str(cfg.name)


def plan_experiment(cfg: DictConfig) -> Plan:
    """Resolves the config (interpolations, relative paths) and builds the stage graph; nothing is written."""
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    resolved.out_root = str(Path(str(resolved.out_root)).resolve())
    return build_plan(resolved)


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
