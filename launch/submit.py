"""Run an experiment:  python launch/submit.py +exp=gc_tinyimagenet [overrides] [-m sweeps]

Plans the experiment's stages, writes <out_root>/<name>/, and sends the unfinished stages to the launcher
(launcher=local runs them here; launcher=slurm submits them and returns).
"""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from trd.data.errors import DataError
from trd.dispatch import LauncherError
from trd.experiment import plan_experiment, run
from trd.plan import ConfigError


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            from trd import sweep

            sweep.collect(cfg, plan_experiment(cfg), list(HydraConfig.get().overrides.task))
            return
        result = run(cfg)
    except (ConfigError, DataError, LauncherError) as err:
        print(f"trd: error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
