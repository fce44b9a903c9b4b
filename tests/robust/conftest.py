"""Planning an experiment of configs/exp/ the way launch/submit.py does, for the robust-transfer config tests."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trd.data.urls import expand_urls
from trd.experiment import plan_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def plan_exp():
    """plan_exp(exp, out_root, *overrides, placeholder_shards=False) -> the plan; placeholder_shards touches an
    empty file at every shard path of data.source and data.target (datasets trd cannot generate)."""

    def plan(exp: str, out_root: Path, *overrides: str, placeholder_shards: bool = False):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"+exp={exp}", f"out_root={out_root}", *overrides])
        if placeholder_shards:
            for role in (cfg.data.source, cfg.data.target):
                for url in [*expand_urls(role.train), *expand_urls(role.test)]:
                    Path(url).parent.mkdir(parents=True, exist_ok=True)
                    Path(url).touch()
        return plan_experiment(cfg)

    return plan
