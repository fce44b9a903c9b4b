"""An experiment's stages as the report sees them: plan.json for where they are and what they are about (labels,
lineage, sweep point), metrics.json for what they got.

Nothing else is read, so every number in a report comes from one of these files (a record keeps its path).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from trd import contract
from trd.atomic import read_json

SWEEP_LABEL = "sweep"
SEED_KEY = "seed"


class StalePlanError(ValueError):
    """plan.json of an older trd: the experiment must be planned again."""


@dataclass
class Record:
    name: str
    kind: str
    dir: Path
    model: dict  # labels that name the model (method, lam, ...)
    attack: dict  # labels that name the attack or evaluation (task, scheme, seed, ...)
    metrics: dict = field(default_factory=dict)
    inputs: str = ""  # the lineage of the stages it reads: which model (up to seeds) it is about
    instance: str = ""  # the hashes of the stages it reads: which model instance it is about
    lineage: str = ""
    sweep: str = ""
    reported: bool = False
    variant_key: str | None = None  # set by load_records from the stages' lineage; labels alone otherwise

    @property
    def status(self) -> str:
        """done / failed / diverged / running, or pending when the stage has not started (no metrics.json)."""
        return self.metrics.get("status", contract.PENDING)

    @property
    def ok(self) -> bool:
        return self.status == contract.DONE

    @property
    def metrics_path(self) -> str:
        return str(self.dir / contract.METRICS_FILE)

    @property
    def variant(self) -> str:
        """The model variant as a canonical string: its model labels, told apart by the sweep setting where two
        variants share all labels (see load_records)."""
        return self.variant_key if self.variant_key is not None else variant_key(self.model)

    def label(self, key: str, default=None):
        """An attack label, else a model label."""
        return self.attack.get(key, self.model.get(key, default))


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
    return json.dumps(labels, sort_keys=True, default=str)


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


def report_settings(exp_dir: str | Path) -> dict:
    """The report settings the experiment was planned with (paper scheme, reference method)."""
    plan = read_json(Path(exp_dir) / contract.PLAN_FILE, default={}) or {}
    return dict((plan.get("settings") or {}).get("report") or {})


def load_records(exp_dir: str | Path) -> list[Record]:
    exp_dir = Path(exp_dir)
    plan = read_json(exp_dir / contract.PLAN_FILE)
    if plan is None:
        raise FileNotFoundError(f"{exp_dir} has no {contract.PLAN_FILE}: give an experiment directory written by "
                                f"launch/submit.py")
    if plan.get("format", 1) < contract.PLAN_FORMAT:
        raise StalePlanError(f"{exp_dir / contract.PLAN_FILE} was written by an older trd (plan format "
                             f"{plan.get('format', 1)}): submit the experiment again with launch/submit.py to plan "
                             f"it anew (its stages run again: their hashes changed)")
    stages = plan["stages"]
    records = []
    for name, stage in stages.items():
        about = _about(stage.get("inputs") or {})
        inputs = json.dumps(sorted((role, stages[dep]["lineage"]) for role, dep in about.items() if dep in stages))
        instance = ";".join(sorted(stages[dep]["hash"] for dep in about.values() if dep in stages))
        metrics = read_json(Path(stage["dir"]) / contract.METRICS_FILE, default={}) or {}
        records.append(Record(name, stage["kind"], Path(stage["dir"]), dict(stage[contract.MODEL_LABELS]),
                              dict(stage[contract.ATTACK_LABELS]), metrics, inputs, instance, stage["lineage"],
                              stage.get("sweep", ""), bool(stage.get("reported"))))
    _assign_variants(records)
    return records


def _about(inputs: dict[str, str]) -> dict[str, str]:
    """The inputs that say which model a stage is about: its `model` input where it has one (the public model an
    attack is crafted on is part of the attack, not of the model attacked), else all of them."""
    return {"model": inputs["model"]} if "model" in inputs else inputs


def _assign_variants(records: list[Record]) -> None:
    """A record's variant is its model labels and the lineage of the model it is about. Labels name a variant;
    where a sweep gives several lineages the same labels (a setting that is no label, say dispose.optim.lr), each
    is told apart by the sweep point its stages belong to (seeds left out)."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        if record.reported:  # the stages a report reads, each about one model
            groups.setdefault((variant_key(record.model), record.inputs), []).append(record)
    by_labels: dict[str, list[list[Record]]] = {}
    for (labels, _), members in groups.items():
        by_labels.setdefault(labels, []).append(members)
    for labels, variants in by_labels.items():
        taken: set[str] = set()
        for members in variants:
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
    _split_attacks(records)


def _split_attacks(records: list[Record]) -> None:
    """A sweep over attacker settings (say piggyback.schemes.finetune.epochs) attacks one model twice under
    one scheme name: each setting becomes a scheme of its own ('finetune [piggyback....epochs=10]'), so
    attacks are never averaged across settings as if they were seeds."""
    attacks: dict[tuple, dict[str, list[Record]]] = {}
    for record in records:
        if record.reported and "scheme" in record.attack:
            key = (record.variant, record.label("task"), record.label("scheme"))
            attacks.setdefault(key, {}).setdefault(record.lineage, []).append(record)
    for (_, _, scheme), settings in attacks.items():
        if len(settings) < 2:
            continue
        for members in settings.values():
            setting = _common_setting(members)
            if setting:
                for record in members:
                    record.attack = {**record.attack, "scheme": f"{scheme} [{setting}]"}


def _common_setting(members: list[Record]) -> str:
    """The sweep setting most of these records belong to ('' where none does: a setting of every point)."""
    named = [p for p in (_setting(r.sweep) for r in members) if p]
    return max(set(named), key=named.count) if named else ""


def _setting(point: str) -> str:
    """A sweep point less its seed: 'dispose.optim.lr=0.01' from 'seed=1,dispose.optim.lr=0.01'."""
    return ",".join(o for o in split_overrides(point) if _key(o) != SEED_KEY)


def _with_setting(labels_key: str, setting: str) -> str:
    labels = json.loads(labels_key)
    if setting:
        labels[SWEEP_LABEL] = setting
    return json.dumps(labels, sort_keys=True, default=str)
