"""Hydra multirun (-m) as one submission: every sweep point is planned in turn, and once all are, the
merged plan goes out together, so shared stages run once and each fan-out is one job array."""
from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trd.plan import Plan

_points: list[tuple[DictConfig, Plan, str]] = []


def collect(cfg: DictConfig, plan: Plan, point: str) -> None:
    _points.append((cfg, plan, point))


class DispatchSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from trd.experiment import experiment_dir, launch

        if not _points:
            return
        first_cfg, merged, _ = _points[0]
        exp_dir = experiment_dir(first_cfg)
        for _, plan, point in _points[1:]:
            merged.merge(plan, point)
        points = "\n".join(f"# {point or '(defaults)'}\n{OmegaConf.to_yaml(cfg, resolve=True)}" for cfg, _, point in _points)
        _points.clear()
        result = launch(merged, exp_dir, first_cfg.launcher, points)
        if result.failed:
            raise SystemExit(1)
