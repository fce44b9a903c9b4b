"""Hydra multirun (-m) as one submission: every sweep point is planned in turn, and once all are, the
merged plan goes out together, so shared stages run once and each fan-out is one job array."""
from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trd.plan import Plan

_points: list[tuple[DictConfig, Plan, list[str]]] = []


def collect(cfg: DictConfig, plan: Plan, overrides: list[str]) -> None:
    _points.append((cfg, plan, list(overrides)))


def point_names(overrides: list[list[str]]) -> list[str]:
    """Each point named by the overrides that differ between points (the swept ones), not the shared ones."""
    shared = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [",".join(o for o in point if o not in shared) for point in overrides]


class DispatchSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from trd.config import ConfigError
        from trd.data.errors import DataError
        from trd.dispatch import LauncherError
        from trd.experiment import experiment_dir, launch, resolve
        from trd.plan import merge_points

        if not _points:
            return
        names = point_names([overrides for _, _, overrides in _points])
        first_cfg = _points[0][0]
        configs = "\n".join(f"# {name or '(defaults)'}\n{OmegaConf.to_yaml(cfg, resolve=True)}"
                            for (cfg, _, _), name in zip(_points, names))
        # Hydra turns a callback's exceptions into warnings; a failed submission must fail the command.
        try:
            merged = merge_points(resolve(first_cfg), [plan for _, plan, _ in _points], names)
            _points.clear()
            result = launch(merged, experiment_dir(first_cfg), first_cfg.launcher, configs)
        except (ConfigError, DataError, LauncherError) as err:
            print(f"trd: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        if result.failed:
            raise SystemExit(1)
