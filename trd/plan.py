"""An experiment as a graph of stages, each addressed by a hash of exactly what determines its output.

    plan = build_plan(cfg)          # which stages, their configs, their inputs
    plan.write(exp_dir)             # stage.json in every stage dir, plan.json + links in the experiment dir

The stage dir is <out_root>/stages/<kind>-<hash>, shared by every experiment under that root: a second
experiment with the same pretrain config finds that stage done and reuses it; an unfinished one resumes.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trd.engine.atomic import atomic_write_json, read_json

# Bump when a change to the code changes what an existing stage config produces.
STAGE_FORMAT = 1
# Config keys a stage needs that do not change its output (how often it checkpoints), kept out of its hash.
UNHASHED_KEYS = frozenset({"checkpoint_every"})


class ConfigError(ValueError):
    """A config value or key that trd cannot run; the message names it and the fix."""


@dataclass
class StageSpec:
    name: str
    kind: str
    config: dict
    inputs: dict[str, str] = field(default_factory=dict)  # role -> name of the input stage in the plan
    labels: dict = field(default_factory=dict)  # copied into metrics.json for reports (method, task, ...)
    hash: str = ""
    dir: Path | None = None


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _output_relevant(obj):
    if isinstance(obj, Mapping):
        return {k: _output_relevant(v) for k, v in obj.items() if k not in UNHASHED_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_output_relevant(v) for v in obj]
    return obj


class Plan:
    def __init__(self, out_root: str | Path):
        self.out_root = Path(out_root).resolve()
        self.stages: dict[str, StageSpec] = {}

    def add(self, name: str, kind: str, config: dict, inputs: dict[str, str] | None = None,
            labels: dict | None = None) -> StageSpec:
        inputs = dict(inputs or {})
        for role, dep in inputs.items():
            if dep not in self.stages:
                raise ConfigError(f"stage {name} needs stage {dep!r} as its {role}, which the plan does not have")
        identity = {
            "format": STAGE_FORMAT, "kind": kind, "config": _output_relevant(config), "labels": labels or {},
            "inputs": {role: self.stages[dep].hash for role, dep in inputs.items()},
        }
        digest = hashlib.sha256(_canonical(identity).encode()).hexdigest()[:16]
        spec = StageSpec(name, kind, config, inputs, dict(labels or {}), digest,
                         self.out_root / "stages" / f"{kind}-{digest}")
        existing = self.stages.get(name)
        if existing is not None and existing.hash != digest:
            raise ConfigError(f"two different stages are both named {name!r}; give one another name")
        self.stages[name] = spec
        return spec

    def __getitem__(self, name: str) -> StageSpec:
        return self.stages[name]

    def __contains__(self, name: str) -> bool:
        return name in self.stages

    def of_kind(self, *kinds: str) -> list[StageSpec]:
        return [s for s in self.stages.values() if s.kind in kinds]

    def released(self) -> list[StageSpec]:
        return self.of_kind(*RELEASING_KINDS)

    def waves(self) -> list[list[StageSpec]]:
        """Stages grouped by depth in the dependency graph: a wave needs only earlier waves."""
        depth: dict[str, int] = {}
        for name, spec in self.stages.items():  # insertion order is a topological order (add checks inputs)
            depth[name] = 1 + max((depth[d] for d in spec.inputs.values()), default=-1)
        waves: list[list[StageSpec]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for name, d in depth.items():
            waves[d].append(self.stages[name])
        return waves

    def merge(self, other: "Plan", suffix: str) -> None:
        """Adds another plan's stages (a point of a sweep); a stage with the same hash is the same stage,
        a same-named stage with another hash gets the sweep point's suffix."""
        renamed: dict[str, str] = {}
        by_hash = {s.hash: s.name for s in self.stages.values()}
        for spec in other.stages.values():
            if spec.hash in by_hash:
                renamed[spec.name] = by_hash[spec.hash]
                continue
            name = spec.name if spec.name not in self.stages else f"{spec.name}[{suffix}]"
            new = StageSpec(name, spec.kind, spec.config, {r: renamed[d] for r, d in spec.inputs.items()},
                            spec.labels, spec.hash, spec.dir)
            self.stages[name] = new
            renamed[spec.name] = name
            by_hash[spec.hash] = name

    def write(self, exp_dir: str | Path, resolved_config: str | None = None) -> Path:
        exp_dir = Path(exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.stages.values():
            spec.dir.mkdir(parents=True, exist_ok=True)
            payload = {
                "name": spec.name, "kind": spec.kind, "hash": spec.hash, "config": spec.config,
                "labels": spec.labels, "inputs": {r: str(self.stages[d].dir) for r, d in spec.inputs.items()},
            }
            if read_json(spec.dir / "stage.json") is None:
                atomic_write_json(spec.dir / "stage.json", payload)
            link = exp_dir / "stages" / spec.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(os.path.relpath(spec.dir, link.parent), link)
        atomic_write_json(exp_dir / "plan.json", {
            "stages": {
                s.name: {"kind": s.kind, "hash": s.hash, "dir": str(s.dir), "labels": s.labels,
                         "inputs": s.inputs}
                for s in self.stages.values()
            }
        })
        if resolved_config is not None:
            (exp_dir / "config.yaml").write_text(resolved_config)
        return exp_dir


Planner = Callable[[Mapping, Plan], None]
PLANNERS: dict[str, Planner] = {}
# Kinds whose model.safetensors is a model the defender would release (evaluated and attacked later).
RELEASING_KINDS: set[str] = set()


def planner(kind: str, releases_models: bool = False):
    """Registers the function that adds a stage kind (and its fan-out) to a plan."""

    def register(fn: Planner) -> Planner:
        PLANNERS[kind] = fn
        if releases_models:
            RELEASING_KINDS.add(kind)
        return fn

    return register


def build_plan(cfg: Mapping) -> Plan:
    import trd.stages.all  # noqa: F401  (registers every built-in planner)

    plan = Plan(cfg["out_root"])
    for kind in cfg["stages"]:
        if kind not in PLANNERS:
            raise ConfigError(f"unknown stage {kind!r} in stages: use some of {', '.join(PLANNERS)}")
        PLANNERS[kind](cfg, plan)
    return plan


def take(node: Mapping, allowed: set[str] | tuple[str, ...], where: str) -> dict:
    """A config node as a plain dict, refusing keys trd does not know (typos in experiment files)."""
    from omegaconf import DictConfig, OmegaConf

    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    unknown = sorted(set(plain) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown config key {where}.{unknown[0]}: {where} takes {', '.join(sorted(allowed))}")
    return plain
