"""An experiment's stages as the report sees them: plan.json for where they are, metrics.json for what they got.

Nothing else is read, so every number in a report comes from one of these files (a record keeps its path).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from trd.engine.atomic import read_json
from trd.metrics import DONE, FILE
from trd.stages.report import REPORTED_KINDS

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
    model: str = ""  # the input stage dirs: which model instance this evaluation or attack is about
    variant_key: str | None = None  # set by load_records from the stages' lineage; labels alone otherwise

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
        """The model variant as a canonical string: its labels without the per-stage ones, told apart by the
        sweep setting where two variants share all labels (see load_records)."""
        return self.variant_key if self.variant_key is not None else variant_key(self.labels)

    def label(self, key: str, default=None):
        return self.labels.get(key, default)


SWEEP_LABEL = "sweep"
SEED_KEY = "seed"


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


def override_leaf(override: str) -> str:
    """'lam=0.9' from 'dispose.lam=0.9': the override as the label of its last key would show it."""
    return f"{_key(override).split('.')[-1]}={override.split('=', 1)[-1]}"


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
    extra = [o for o in split_overrides(point) if override_leaf(o) not in shown]
    return f"{name} [{','.join(extra)}]" if extra else name


def load_records(exp_dir: str | Path) -> list[Record]:
    exp_dir = Path(exp_dir)
    plan = read_json(exp_dir / "plan.json")
    if plan is None:
        raise FileNotFoundError(f"{exp_dir} has no plan.json: give an experiment directory written by launch/submit.py")
    stages = plan["stages"]
    records = []
    for name, stage in stages.items():
        stage_dir = Path(stage["dir"])
        metrics = read_json(stage_dir / FILE, default={}) or {}
        inputs = stage.get("inputs") or {}
        model = ";".join(sorted(str(stages[dep]["dir"]) for dep in inputs.values() if dep in stages))
        records.append(Record(name, stage["kind"], stage_dir, dict(stage.get("labels") or {}), metrics, model))
    _assign_variants(records, stages)
    return records


def _without_seeds(obj):
    if isinstance(obj, dict):
        return {k: _without_seeds(v) for k, v in obj.items() if k != SEED_KEY}
    if isinstance(obj, list):
        return [_without_seeds(v) for v in obj]
    return obj


def _lineages(stages: dict) -> dict[str, str]:
    """Per stage, a digest of its config and its inputs' configs, all the way up, with every seed left out:
    two stages with the same lineage are replicates of one setting (they differ in seeds at most)."""
    memo: dict[str, str] = {}

    def lineage(name: str) -> str:
        if name not in memo:
            stage = stages[name]
            spec = read_json(Path(stage["dir"]) / "stage.json")
            # No stage.json (a hand-made or pruned experiment): the config is unknown, so nothing is split on it.
            own = _without_seeds(spec["config"]) if spec else None
            inputs = sorted((role, lineage(dep)) for role, dep in (stage.get("inputs") or {}).items() if dep in stages)
            blob = json.dumps({"kind": stage["kind"], "config": own, "inputs": inputs}, sort_keys=True, default=str)
            memo[name] = hashlib.sha256(blob.encode()).hexdigest()
        return memo[name]

    for name in stages:
        lineage(name)
    return memo


def _assign_variants(records: list[Record], stages: dict) -> None:
    """A record's variant is its labels (less the per-stage ones) and the lineage of the model it is about.
    Labels name a variant; where a sweep gives several lineages the same labels (a setting that is no label,
    say dispose.optim.lr), each is told apart by the sweep point its stage names carry (seeds left out)."""
    lineage = _lineages(stages)
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        if record.kind not in REPORTED_KINDS:  # the stages a report reads, each about one model
            continue
        inputs = stages[record.name].get("inputs") or {}
        model = json.dumps(sorted((role, lineage[dep]) for role, dep in inputs.items() if dep in lineage))
        groups.setdefault((variant_key(record.labels), model), []).append(record)
    by_labels: dict[str, list[tuple[str, list[Record]]]] = {}
    for (labels, model), members in groups.items():
        by_labels.setdefault(labels, []).append((model, members))
    for labels, variants in by_labels.items():
        taken: set[str] = set()
        for model, members in variants:
            key = labels
            if len(variants) > 1:
                setting = _common_setting(members)
                key = _with_setting(labels, setting)
                number = 2
                while key in taken:
                    key, number = _with_setting(labels, f"{setting} #{number}".strip()), number + 1
            taken.add(key)
            for record in members:
                record.variant_key = key
    _split_attacks(records, lineage)


def _split_attacks(records: list[Record], lineage: dict[str, str]) -> None:
    """A sweep over attacker settings (say piggyback.schemes.finetune.epochs) attacks one model twice under
    one scheme name: each setting becomes a scheme of its own ('finetune [piggyback....epochs=10]'), so
    attacks are never averaged across settings as if they were seeds."""
    attacks: dict[tuple, dict[str, list[Record]]] = {}
    for record in records:
        if record.kind == "piggyback":
            key = (record.variant, record.label("piggyback"), record.label("scheme"))
            attacks.setdefault(key, {}).setdefault(lineage[record.name], []).append(record)
    for (_, _, scheme), settings in attacks.items():
        if len(settings) < 2:
            continue
        for members in settings.values():
            setting = _common_setting(members)
            if setting:
                for record in members:
                    record.labels = {**record.labels, "scheme": f"{scheme} [{setting}]"}


def _common_setting(members: list[Record]) -> str:
    """The sweep setting most of these records' stage names carry ('' where none does: the first point's)."""
    named = [p for p in (_setting(sweep_point(r.name)) for r in members) if p]
    return max(set(named), key=named.count) if named else ""


def _setting(point: str) -> str:
    """A sweep point less its seed: 'dispose.optim.lr=0.01' from 'seed=1,dispose.optim.lr=0.01'."""
    return ",".join(o for o in split_overrides(point) if _key(o) != SEED_KEY)


def _with_setting(labels_key: str, setting: str) -> str:
    labels = json.loads(labels_key)
    if setting:
        labels[SWEEP_LABEL] = setting
    return json.dumps(labels, sort_keys=True, default=str)
