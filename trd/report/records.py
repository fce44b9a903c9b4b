"""An experiment's stages as the report sees them: plan.json for where they are, metrics.json for what they got.

Nothing else is read, so every number in a report comes from one of these files (a record keeps its path).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from trd.engine.atomic import read_json
from trd.metrics import DONE, FILE

# Labels that say which evaluation, attack or seed a stage is rather than which released model it is about:
# what is left of a stage's labels once these are dropped names its model variant (a table row).
STAGE_LABELS = frozenset({"evaluates", "released", "attacks", "piggyback", "scheme", "seed", "model_seed",
                          "fraction", "paper_scheme"})


@dataclass
class Record:
    name: str
    kind: str
    dir: Path
    labels: dict
    metrics: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """done / failed / diverged / running, or pending when the stage has not started (no metrics.json)."""
        return self.metrics.get("status", "pending")

    @property
    def ok(self) -> bool:
        return self.status == DONE

    @property
    def metrics_path(self) -> str:
        return str(self.dir / FILE)

    @property
    def variant(self) -> str:
        """The model variant as a canonical string: its labels without the per-stage ones, plus the sweep
        point for a stage that a Hydra sweep planned twice under one name. Without the point, two models of a
        sweep over a setting that is not a label (say dispose.optim.lr) would be averaged as if seeds. A swept
        top-level ``seed`` is a replicate, not a variant: it becomes the record's model seed instead."""
        labels = dict(self.labels)
        setting = [o for o in split_overrides(sweep_point(self.name)) if _key(o) != SEED_OVERRIDE]
        if setting:
            labels[SWEEP_LABEL] = ",".join(setting)
        return variant_key(labels)

    def label(self, key: str, default=None):
        if key == "model_seed" and "model_seed" not in self.labels:
            seeds = [o.split("=", 1)[1] for o in split_overrides(sweep_point(self.name)) if _key(o) == SEED_OVERRIDE]
            return seeds[0] if seeds else default
        return self.labels.get(key, default)


SWEEP_LABEL = "sweep"
SEED_OVERRIDE = "seed"


def sweep_point(stage_name: str) -> str:
    """'dispose.optim.lr=0.01' from 'piggyback/dispose/gc/synth/finetune/s0[dispose.optim.lr=0.01]'
    (trd.plan.Plan.merge's suffix); greedy, so a list value's brackets stay inside ('x=[0.05]')."""
    found = re.search(r"\[(.*)\]", stage_name)
    return found.group(1) if found else ""


def split_overrides(point: str) -> list[str]:
    """'a=1,b=[2,3]' -> ['a=1', 'b=[2,3]']: commas inside brackets belong to a list value."""
    parts, depth, current = [], 0, ""
    for char in point:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def variant_key(labels: dict) -> str:
    return json.dumps({k: v for k, v in labels.items() if k not in STAGE_LABELS}, sort_keys=True, default=str)


def variant_name(key: str) -> str:
    """'gc lam=0.1' from '{"lam": 0.1, "method": "gc"}'; a sweep point is added in brackets, less the overrides
    that a label already shows ('gc lam=0.1 [dispose.optim.lr=0.01]')."""
    labels = json.loads(key)
    point = labels.pop(SWEEP_LABEL, "")
    rest = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "method")
    name = f"{labels.get('method', '?')} {rest}".strip()
    shown = {f"{k}={v}" for k, v in labels.items()}
    extra = [o for o in split_overrides(point) if f"{_key(o).split('.')[-1]}={o.split('=', 1)[-1]}" not in shown]
    return f"{name} [{','.join(extra)}]" if extra else name


def load_records(exp_dir: str | Path) -> list[Record]:
    exp_dir = Path(exp_dir)
    plan = read_json(exp_dir / "plan.json")
    if plan is None:
        raise FileNotFoundError(f"{exp_dir} has no plan.json: give an experiment directory written by launch/submit.py")
    records = []
    for name, stage in plan["stages"].items():
        stage_dir = Path(stage["dir"])
        metrics = read_json(stage_dir / FILE, default={}) or {}
        records.append(Record(name, stage["kind"], stage_dir, dict(stage.get("labels") or {}), metrics))
    return records
