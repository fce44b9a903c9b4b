"""An experiment as a graph of stages, each addressed by a hash of exactly what determines its output.

    kinds = trd.stages.discover()   # the stage kinds, as plug-ins (StageKind)
    plan = build_plan(cfg, kinds)   # which stages, their configs, their inputs
    plan.write(exp_dir)             # stage.json in every stage dir, plan.json + links in the experiment dir

The stage dir is <out_root>/stages/<kind>-<hash>, shared by every experiment under that root: a second
experiment with the same pretrain config finds that stage done and reuses it; an unfinished one resumes.
Nothing here imports a stage kind: kinds are handed in, so plan-time code never depends on run-time code.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trd import contract
from trd.atomic import atomic_write_json, read_json
from trd.config.errors import ConfigError
from trd.provenance import code_version

# Bump when a change to code that every kind shares (the loop, the data order) changes what stages produce;
# a change to one kind's numerics bumps that kind's StageKind.version instead.
SHARED_VERSION = 1
# Config keys a stage needs that do not change its output (how often it checkpoints), kept out of its hash.
UNHASHED_KEYS = frozenset({"checkpoint_every"})
SEED_KEY = "seed"


@dataclass(frozen=True)
class StageKind:
    """A stage kind as a plug-in: a module of trd.stages (or of a package registered under the entry-point
    group `trd.stages`) that defines `KIND = StageKind(...)`.

    plan(cfg, plan) adds the kind's stages (with their config, inputs and labels) to a plan; run(ctx) runs one
    of them in its job and returns its metrics. model labels name the model a stage is about; attack_labels
    lists the keys of the labels that name the attack or evaluation instead."""
    name: str
    plan: Callable[[Mapping, "Plan"], None]
    run: Callable[[Any], dict]
    version: int = 1  # bump when a change to this kind's code changes what its existing stages produce
    releases_models: bool = False  # its model.safetensors is a model the defender would release
    reported: bool = False  # reports read its metrics.json
    per_experiment: bool = False  # planned once over all points of a sweep (the report)
    inputs: tuple[str, ...] = ()  # the input roles its stages may take ("*": any, named by its stages)
    attack_labels: tuple[str, ...] = ()
    schema: type | None = None  # the dataclass its config node cfg.<name> is checked against


@dataclass
class StageSpec:
    name: str
    kind: str
    config: dict
    inputs: dict[str, str] = field(default_factory=dict)  # role -> name of the input stage in the plan
    model: dict = field(default_factory=dict)  # labels naming the model this stage is about (method, lam, ...)
    attack: dict = field(default_factory=dict)  # labels naming the attack or evaluation (task, scheme, seed, ...)
    hash: str = ""
    dir: Path | None = None
    releases_models: bool = False
    reported: bool = False
    lineage: str = ""  # the hash less every seed, all the way up: replicates of one setting share it
    sweep: str = ""  # the overrides of the sweep point this stage belongs to alone ('' if shared or no sweep)


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _digest(obj) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:16]


def output_relevant(obj):
    if isinstance(obj, Mapping):
        return {k: output_relevant(v) for k, v in obj.items() if k not in UNHASHED_KEYS}
    if isinstance(obj, (list, tuple)):
        return [output_relevant(v) for v in obj]
    return obj


def _without_seeds(obj):
    if isinstance(obj, Mapping):
        return {k: _without_seeds(v) for k, v in obj.items() if k != SEED_KEY}
    if isinstance(obj, (list, tuple)):
        return [_without_seeds(v) for v in obj]
    return obj


class Plan:
    def __init__(self, out_root: str | Path, kinds: Mapping[str, StageKind]):
        self.out_root = Path(out_root).resolve()
        self.kinds = dict(kinds)
        self.stages: dict[str, StageSpec] = {}
        self.settings: dict[str, dict] = {}  # experiment-wide settings for the readers of plan.json (the report)

    def add(self, name: str, kind: str, config: dict, inputs: dict[str, str] | None = None,
            model: dict | None = None, attack: dict | None = None) -> StageSpec:
        stage_kind = self.kinds[kind]
        inputs, model, attack = dict(inputs or {}), dict(model or {}), dict(attack or {})
        for role, dep in inputs.items():
            if role not in stage_kind.inputs and "*" not in stage_kind.inputs:
                raise ValueError(f"stage kind {kind} takes inputs {stage_kind.inputs}, not {role!r}")
            if dep not in self.stages:
                raise ConfigError(f"stage {name} needs stage {dep!r} as its {role}, which the plan does not have")
        unknown = sorted(set(attack) - set(stage_kind.attack_labels))
        if unknown:
            raise ValueError(f"stage kind {kind} declares attack labels {stage_kind.attack_labels}, not {unknown}")
        identity = {
            "shared_version": SHARED_VERSION, "kind": kind, "version": stage_kind.version,
            "config": output_relevant(config), "model": model, "attack": attack,
            "inputs": {role: self.stages[dep].hash for role, dep in inputs.items()},
        }
        digest = _digest(identity)
        lineage = _digest({"kind": kind, "config": _without_seeds(output_relevant(config)),
                           "inputs": sorted((role, self.stages[dep].lineage) for role, dep in inputs.items())})
        spec = StageSpec(name, kind, config, inputs, model, attack, digest,
                         self.out_root / "stages" / f"{kind}-{digest}", stage_kind.releases_models,
                         stage_kind.reported, lineage)
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
        return [s for s in self.stages.values() if s.releases_models]

    def released_to_attack(self, kind: str) -> list[StageSpec]:
        """The released models an attack kind's stages are planned over; none is an error at submission."""
        released = self.released()
        if not released:
            raise ConfigError(f"stage {kind} has no model to attack: put a releasing stage (transfer, ...) before it "
                              f"in stages")
        return released

    def reported(self) -> list[StageSpec]:
        return [s for s in self.stages.values() if s.reported]

    def waves(self) -> list[list[StageSpec]]:
        """Stages grouped by depth in the dependency graph: a wave needs only earlier waves."""
        depth: dict[str, int] = {}
        for name, spec in self.stages.items():  # insertion order is a topological order (add checks inputs)
            depth[name] = 1 + max((depth[d] for d in spec.inputs.values()), default=-1)
        waves: list[list[StageSpec]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for name, d in depth.items():
            waves[d].append(self.stages[name])
        return waves

    def write(self, exp_dir: str | Path, resolved_config: str | None = None) -> Path:
        exp_dir = Path(exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        code = code_version()
        for spec in self.stages.values():
            spec.dir.mkdir(parents=True, exist_ok=True)
            if read_json(spec.dir / contract.STAGE_FILE) is None:
                atomic_write_json(spec.dir / contract.STAGE_FILE, {
                    "name": spec.name, "kind": spec.kind, "hash": spec.hash, "shared_version": SHARED_VERSION,
                    "kind_version": self.kinds[spec.kind].version, "config": spec.config,
                    contract.MODEL_LABELS: spec.model, contract.ATTACK_LABELS: spec.attack,
                    "inputs": {r: str(self.stages[d].dir) for r, d in spec.inputs.items()}, "planned_with": code,
                })
            link = exp_dir / contract.STAGE_LINKS / spec.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(os.path.relpath(spec.dir, link.parent), link)
        atomic_write_json(exp_dir / contract.PLAN_FILE, {
            "format": contract.PLAN_FORMAT, "code": code, "settings": self.settings,
            "stages": {
                s.name: {"kind": s.kind, "hash": s.hash, "dir": str(s.dir), contract.MODEL_LABELS: s.model,
                         contract.ATTACK_LABELS: s.attack, "inputs": s.inputs, "reported": s.reported,
                         "releases_models": s.releases_models, "lineage": s.lineage, "sweep": s.sweep}
                for s in self.stages.values()
            },
        })
        if resolved_config is not None:
            (exp_dir / contract.CONFIG_FILE).write_text(resolved_config)
        return exp_dir


def build_plan(cfg: Mapping, kinds: Mapping[str, StageKind], *, per_experiment: bool = True) -> Plan:
    """The plan of cfg.stages, in their order; per_experiment=False leaves out the kinds planned once over a
    whole sweep (merge_points plans those)."""
    plan = Plan(cfg["out_root"], kinds)
    stages = list(cfg["stages"])
    for kind in stages:
        if kind not in kinds:
            raise ConfigError(f"unknown stage {kind!r} in stages: use some of {', '.join(sorted(kinds))}")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"stages={stages} lists a stage kind twice: list each once")
    for kind in stages:
        if per_experiment or not kinds[kind].per_experiment:
            kinds[kind].plan(cfg, plan)
    return plan


def merge_points(cfg: Mapping, plans: list[Plan], points: list[str]) -> Plan:
    """One plan from the plans of a sweep's points (each made with per_experiment=False): a stage with the same
    hash is the same stage, a same-named stage with another hash gets its point as a name suffix, and every
    stage that belongs to one point alone carries that point in its `sweep` field. The kinds planned once
    per experiment (the report) are then planned over the merged plan."""
    merged = Plan(plans[0].out_root, plans[0].kinds)
    for plan in plans:
        merged.settings.update(plan.settings)
    owners: dict[str, set[str]] = {}
    for plan, point in zip(plans, points):
        renamed: dict[str, str] = {}
        by_hash = {s.hash: s.name for s in merged.stages.values()}
        for spec in plan.stages.values():
            if spec.hash in by_hash:
                renamed[spec.name] = by_hash[spec.hash]
            else:
                name = spec.name if spec.name not in merged.stages else f"{spec.name}[{point}]"
                merged.stages[name] = StageSpec(**{**spec.__dict__, "name": name,
                                                   "inputs": {r: renamed[d] for r, d in spec.inputs.items()}})
                renamed[spec.name] = by_hash[spec.hash] = name
            owners.setdefault(renamed[spec.name], set()).add(point)
    for name, spec in merged.stages.items():
        spec.sweep = next(iter(owners[name])) if len(owners[name]) == 1 and len(plans) > 1 else ""
    for kind in cfg["stages"]:
        if merged.kinds[kind].per_experiment:
            merged.kinds[kind].plan(cfg, merged)
    return merged
