"""Run an experiment:  python launch/submit.py +exp=gc_tinyimagenet [overrides] [-m sweeps]

Plans the experiment's stages, writes <out_root>/<name>/, and sends the unfinished stages to the launcher
(launcher=local runs them here; launcher=slurm submits them and returns).
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from trd.config import ConfigError
from trd.config.overrides import check_keys, check_syntax
from trd.data.errors import DataError
from trd.dispatch import LauncherError
from trd.experiment import plan_experiment, run, schema_at

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            from trd import sweep

            sweep.collect(cfg, plan_experiment(cfg, per_experiment=False), list(HydraConfig.get().overrides.task))
            return
        result = run(cfg)
    except (ConfigError, DataError, LauncherError) as err:
        print(f"trd: error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.failed:
        sys.exit(1)


if __name__ == "__main__":
    try:
        check_syntax(sys.argv[1:])
        check_keys(sys.argv[1:], CONFIG_DIR, "config", schema_at)
    except ConfigError as err:
        print(f"trd: error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
