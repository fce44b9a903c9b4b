"""Seen and unseen attackers of a non-fine-tunable model: a model disposed against simulated attackers (method
`nft`) is trained to resist the attackers its distribution draws, so the worst-case number alone cannot tell
whether it generalises. The `seen_unseen` table splits every piggyback grid point into those inside the model's
simulated-attacker distribution (its dispose stage's metrics.json, `simulated_attackers`) and those outside it,
and gives per side the best-of-grid Acc_pl and the disposal ratio against the reference and scratch models
attacked at the points the same distribution classifies the same way. Inner-step counts are left out of the
rule: every real attacker runs far more steps than a simulated one, so counting them would call every point
unseen.
"""
from __future__ import annotations

import json
from dataclasses import replace

from trd.report.cells import Cell, aggregate, missing, ratio_cell
from trd.report.records import Record, variant_name
from trd.report.tables import SATURATION_NOTE, Experiment, Table

SIMULATED = "simulated_attackers"
SIDES = ("seen", "unseen")
# The momentum torch's SGD gets when a scheme names none (trd.engine.optim).
DEFAULT_MOMENTUM = 0.9
LR_TOLERANCE = 1e-9  # a learning rate written as a range edge is inside it despite float round-off
# A per-record number added to a copy of its metrics, so aggregate can group and average it like any field.
_SIDE_FIELD = "_acc_pl_side"


def optimiser_family(optim: dict, weight_decay: float) -> str:
    """The simulated attacker's optimiser a piggyback point ran as: sgd with momentum is `momentum`, plain sgd
    `sgd`; adamw without weight decay is Adam's update rule, so `adam`; adamw with decay stays `adamw`."""
    name = optim["name"]
    if name == "sgd":
        return "momentum" if float(optim.get("momentum", DEFAULT_MOMENTUM)) > 0 else "sgd"
    if name == "adamw":
        return "adam" if float(weight_decay) == 0 else "adamw"
    return name


def _lr_inside(lr: float, low: float, high: float) -> bool:
    return low * (1 - LR_TOLERANCE) <= lr <= high * (1 + LR_TOLERANCE)


def seen_by(point: dict, attacker: dict, distribution: dict) -> bool:
    """Whether a piggyback grid point (its lr and weight_decay) of a scheme (metrics["attacker"]: mode, optim)
    lies inside a simulated-attacker distribution: its mode, its optimiser family and its learning rate
    (inside that optimiser's [low, high]) all drawn by it. Step counts are not compared (module docstring)."""
    if attacker["mode"] not in distribution.get("modes", ()):
        return False
    lr_range = distribution.get("optimizers", {}).get(optimiser_family(attacker["optim"], point["weight_decay"]))
    return lr_range is not None and _lr_inside(float(point["lr"]), *map(float, lr_range))


def _side_points(record: Record, distribution: dict, side: str) -> list[dict]:
    attacker = record.metrics.get("attacker")
    if not attacker:
        return []
    want = side == "seen"
    return [p for p in record.metrics.get("grid") or [] if seen_by(p, attacker, distribution) == want]


def _best_accuracy(points: list[dict]) -> float | None:
    """The best test accuracy over the finished points (the evaluation acc_pl.best takes its max over); None
    when every one diverged."""
    curves = [p["curve"] for p in points if p.get("status") == "done" and p.get("curve")]
    return max((max(c) for c in curves), default=None)


def side_acc_pl(ex: Experiment, variant: str | None, task: str, distribution: dict, side: str) -> Cell:
    """The worst case restricted to one side: per attacked model the best test accuracy over that side's grid
    points of every scheme and seed, then mean +- std over the model's replicates (as Experiment.acc_pl_best).
    A stage that did not finish keeps the cell failed or pending; one without a point on this side is left out."""
    if variant is None:
        return missing("no such model in this experiment")
    name = variant_name(variant)
    kept, diverged = [], []
    for record in ex.of("piggyback", variant, task=task):
        if not record.ok:
            kept.append(record)
            continue
        points = _side_points(record, distribution, side)
        value = _best_accuracy(points)
        if value is not None:
            kept.append(replace(record, metrics={**record.metrics, _SIDE_FIELD: value}))
        elif points:
            diverged.append(record)
    if not kept and diverged:
        return Cell(status="diverged", field=f"acc_pl.best over the {side} grid points",
                    sources=tuple(r.metrics_path for r in diverged), note=f"every {side} grid point of {name} diverged")
    cell = aggregate(kept, _SIDE_FIELD, group=lambda r: r.instance or r.label("attacks"), samples="test_samples",
                     absent=f"no grid point of {name} on {task} is {side} by the distribution")
    field = cell.field.replace(_SIDE_FIELD, f"acc_pl.best over the {side} grid points")
    return replace(cell, field=field)


def nft_distributions(ex: Experiment, records: list[Record]) -> dict[str, dict]:
    """Variant -> the simulated-attacker distribution of its dispose stages. Dispose stages are not reported
    records, so a variant is found through a reported record about the model of that lineage; replicates share
    a lineage (seeds left out) and the distribution is config, not seed, so one stage speaks for all."""
    by_lineage = {r.lineage: r.metrics[SIMULATED] for r in records
                  if r.kind == "dispose" and isinstance(r.metrics.get(SIMULATED), dict)}
    found: dict[str, dict] = {}
    for record in ex.records:
        for _, lineage in json.loads(record.inputs or "[]"):
            if lineage in by_lineage:
                found.setdefault(record.variant, by_lineage[lineage])
    return {v: found[v] for v in ex.variants if v in found}


def _columns(tasks: list[str]) -> list[str]:
    return [f"{label} {side} {task}" for task in tasks for side in SIDES
            for label in ("Acc_pl", "disposal ratio")]


def _describe(distribution: dict) -> str:
    ranges = ", ".join(f"{name} lr [{low:g}, {high:g}]" for name, (low, high) in distribution["optimizers"].items())
    steps = distribution.get("steps") or ["?", "?"]
    return f"{ranges}; modes {', '.join(distribution['modes'])}; {steps[0]}-{steps[1]} inner steps"


def _caption(ex: Experiment, distributions: dict[str, dict]) -> str:
    r = ex.reference_method.upper()
    max_steps = sorted({int(d["steps"][1]) for d in distributions.values() if d.get("steps")})
    per_variant = "; ".join(f"{variant_name(v)}: {_describe(d)}" for v, d in distributions.items())
    return (f"Acc_pl: the best test accuracy over the piggyback grid points of every scheme and seed that the "
            f"row's simulated-attacker distribution draws (seen: mode, optimiser family and learning rate inside "
            f"its range; sgd with momentum counts as momentum, adamw as adam only without weight decay) or does not "
            f"(unseen). Disposal ratio against {r} and scratch at the points the same distribution puts on the same "
            f"side. Inner steps are not compared: every real attacker runs far more than the simulated ones (at "
            f"most {'/'.join(map(str, max_steps)) or '?'}). Distributions: {per_variant}. {SATURATION_NOTE}")


def seen_unseen(ex: Experiment, records: list[Record]) -> Table | None:
    """One row per nft variant; None when no dispose stage recorded a simulated-attacker distribution."""
    distributions = nft_distributions(ex, records)
    if not distributions:
        return None
    ref, scratch = ex.reference["ref"], ex.reference["scratch"]
    table = Table("seen_unseen", "Non-fine-tunable disposal: attackers inside and outside the training distribution",
                  _columns(ex.tasks), caption=_caption(ex, distributions))
    for variant, distribution in distributions.items():
        cells = {}
        for task in ex.tasks:
            for side in SIDES:
                # The references at the points this row's distribution puts on this side: like against like.
                x, r, s = (side_acc_pl(ex, v, task, distribution, side) for v in (variant, ref, scratch))
                cells[f"Acc_pl {side} {task}"] = x
                cells[f"disposal ratio {side} {task}"] = ratio_cell(x, r, s, ex.reference_method.upper())
        table.add(variant_name(variant), cells)
    return table


def attacker_split_tables(ex: Experiment, records: list[Record]) -> list[Table]:
    """The tables of this module that the experiment has data for."""
    table = seen_unseen(ex, records)
    return [table] if table is not None else []


__all__ = ["attacker_split_tables", "nft_distributions", "optimiser_family", "seen_by", "seen_unseen", "side_acc_pl"]
