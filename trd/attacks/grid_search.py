"""The attacker's grid, and how it finds its own edge: which points to add after a round of runs, and what the
finished grid says (the attacker's accuracy under two selections, and whether the attack saturated).

A point is (lr, weight_decay, augment, budget factor). The first point of the initial grid is the scheme's fixed
setting. After each round, for every (weight decay, augment) setting, a best learning rate at either end of that
setting's grid adds the next one beyond it (x or / extend.lr_factor, at most extend.lr_steps per side, within
extend.lr_range); a point beyond the edge that diverged closes that side. A best point whose best evaluation is
its last runs again with twice the budget (up to extend.budget_doublings times), and again while doubling gains
more than `tolerance` (one standard error of a test accuracy). Best means either selection's:
the oracle (highest test accuracy over every point and evaluation, an upper bound on any attacker of this grid)
or the honest attacker (highest accuracy on a validation slice of its own data).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

DONE, DIVERGED = "done", "diverged"


@dataclass(frozen=True)
class Point:
    lr: float
    weight_decay: float
    augment: bool
    budget_factor: int = 1

    def name(self, vary: tuple[str, ...]) -> str:
        """lr0.01, plus the axes that vary within the scheme (wd, aug) and the budget factor when not 1."""
        parts = [f"lr{self.lr:g}"]
        if "weight_decay" in vary:
            parts.append(f"wd{self.weight_decay:g}")
        if "augment" in vary:
            parts.append(f"aug{int(self.augment)}")
        if self.budget_factor != 1:
            parts.append(f"x{self.budget_factor}")
        return "-".join(parts)

    def _replace_factor(self, factor: int) -> "Point":
        return Point(self.lr, self.weight_decay, self.augment, factor)

    def as_dict(self, vary: tuple[str, ...]) -> dict:
        return {"point": self.name(vary), "lr": self.lr, "weight_decay": self.weight_decay, "augment": self.augment,
                "budget_factor": self.budget_factor}


def point_of(result: dict) -> Point:
    return Point(result["lr"], result["weight_decay"], result["augment"], result["budget_factor"])


def varying_axes(weight_decays: list[float], augments: list[bool]) -> tuple[str, ...]:
    return tuple(axis for axis, values in (("weight_decay", weight_decays), ("augment", augments)) if len(values) > 1)


def initial_points(lrs: list[float], weight_decays: list[float], augments: list[bool]) -> list[Point]:
    """The product of the scheme's lists; their first values make the first point, the fixed setting."""
    return [Point(lr, wd, aug) for wd, aug, lr in itertools.product(weight_decays, augments, lrs)]


def _best_eval(result: dict, key: str) -> tuple[float, int] | None:
    curve = result.get(key) or []
    if result["status"] != DONE or not curve:
        return None
    index = max(range(len(curve)), key=lambda i: (curve[i], -i))
    return curve[index], index


def best(results: list[dict], key: str) -> tuple[dict, int] | None:
    """The result and evaluation index with the highest `key` curve value (earliest on ties), or None."""
    scored = [(found[0], -n, r, found[1]) for n, r in enumerate(results) if (found := _best_eval(r, key))]
    if not scored:
        return None
    _, _, result, index = max(scored, key=lambda s: (s[0], s[1]))
    return result, index


def _neighbours(results: list[dict], point: Point) -> list[dict]:
    """The runs of the same setting at budget factor 1: the learning-rate axis a point sits on."""
    return [r for r in results if r["weight_decay"] == point.weight_decay and r["augment"] == point.augment
            and r["budget_factor"] == 1]


def lr_edges(results: list[dict], point: Point) -> tuple[bool, bool]:
    """(at the lower edge, at the upper edge) of its setting's learning rates; a run beyond an edge counts even
    if it diverged (the side is closed)."""
    lrs = [r["lr"] for r in _neighbours(results, point)]
    return point.lr <= min(lrs), point.lr >= max(lrs)


def _doubling(results: list[dict], key: str, result: dict, index: int, tolerance: float) -> str | None:
    """Why the budget still limits this best run (its best evaluation is its last, and no doubling has yet
    failed to gain more than tolerance), or None."""
    if index != len(result[key]) - 1:
        return None
    point = point_of(result)
    runs = {point_of(r).budget_factor: r for r in results
            if point_of(r)._replace_factor(1) == point._replace_factor(1) and r["status"] == DONE and r.get(key)}
    longer = runs.get(point.budget_factor * 2)
    if longer is not None:  # a longer run exists and is not the best: doubling did not help
        return None
    shorter = runs.get(point.budget_factor // 2) if point.budget_factor > 1 else None
    if shorter is not None and max(result[key]) - max(shorter[key]) <= tolerance:
        return None
    return f"best {_selection(key)} accuracy at the last evaluation of {result['point']}"


def extensions(results: list[dict], initial_lrs: list[float], extend: dict | None,
               tolerance: float = 0.0) -> list[tuple[Point, str]]:
    """The points to add after a round, each with the reason that is recorded beside it."""
    if not extend:
        return []
    known = {point_of(r) for r in results}
    added: dict[Point, str] = {}
    low_bound, high_bound = extend["lr_range"]
    for key in ("curve", "val_curve"):
        found = best(results, key)
        if found is None:
            continue
        result, index = found
        point = point_of(result)
        axis = Point(point.lr, point.weight_decay, point.augment)
        at_low, at_high = lr_edges(results, axis)
        lrs = [r["lr"] for r in _neighbours(results, axis)]
        for edge, beyond, count, bound_ok in (
                (at_high, point.lr * extend["lr_factor"], sum(lr > max(initial_lrs) for lr in lrs),
                 lambda lr: lr <= high_bound * (1 + 1e-9)),
                (at_low, point.lr / extend["lr_factor"], sum(lr < min(initial_lrs) for lr in lrs),
                 lambda lr: lr >= low_bound * (1 - 1e-9))):
            candidate = Point(_round(beyond), point.weight_decay, point.augment)
            if edge and count < extend["lr_steps"] and bound_ok(beyond) and candidate not in known:
                side = "upper" if beyond > point.lr else "lower"
                added.setdefault(candidate, f"best lr {point.lr:g} ({_selection(key)}) at the {side} edge")
        reason = _doubling(results, key, result, index, tolerance)
        if reason and point.budget_factor < 2 ** extend["budget_doublings"]:
            candidate = point._replace_factor(point.budget_factor * 2)
            if candidate not in known:
                added.setdefault(candidate, f"{reason}: twice the budget")
    return list(added.items())


def _round(lr: float) -> float:
    return float(f"{lr:.6g}")


def _selection(key: str) -> str:
    return "test, oracle" if key == "curve" else "validation"


def saturation(results: list[dict], extend: dict | None, tolerance: float = 0.0) -> dict:
    """Whether the oracle's best point is interior on the learning-rate axis and more budget no longer helps (its
    best evaluation is not its last, or doubling its budget gained no more than tolerance); the reasons when not
    (the number is then a lower bound on this attacker)."""
    found = best(results, "curve")
    if found is None:
        return {"saturated": False, "reasons": ["no point finished"]}
    result, index = found
    point = point_of(result)
    at_low, at_high = lr_edges(results, Point(point.lr, point.weight_decay, point.augment))
    reasons = []
    if at_high or at_low:
        side = "upper" if at_high else "lower"
        limit = "no extension configured" if not extend else "extension limit reached"
        reasons.append(f"best lr {point.lr:g} at the {side} edge of its grid ({limit})")
    if _doubling(results, "curve", result, index, tolerance):
        reasons.append(f"best accuracy at the last evaluation of {result['point']}, doubling limit reached")
    return {"saturated": not reasons, "reasons": reasons, "train_acc": result.get("train_acc")}


def summarise(results: list[dict]) -> dict:
    """The attacker's accuracy from a finished grid; results[0] is the fixed point.

    final: the fixed point's test accuracy at the end of its budget (null if it diverged). best: the oracle, the
    highest test accuracy over every point and evaluation. selected: the honest attacker's, the test accuracy
    where its validation accuracy is highest (null without a validation slice). A diverged point is left out,
    never counted as 0%; if every point diverged the attack itself diverged."""
    from trd.losses.finite import NonFiniteError

    if not any(r["status"] == DONE for r in results):
        raise NonFiniteError("every grid point diverged: " +
                             "; ".join(f"{r['point']}: {r.get('error')}" for r in results))
    fixed = results[0]
    oracle, oracle_index = best(results, "curve")
    honest = best(results, "val_curve")
    summary = {
        "acc_pl": {"final": fixed["curve"][-1] if fixed["status"] == DONE else None,
                   "best": oracle["curve"][oracle_index],
                   "selected": honest[0]["curve"][honest[1]] if honest else None},
        "fixed_point": {"point": fixed["point"], "lr": fixed["lr"], "status": fixed["status"]},
        "best_point": {"point": oracle["point"], "lr": oracle["lr"], "step": oracle["steps"][oracle_index]},
        "selected_point": ({"point": honest[0]["point"], "lr": honest[0]["lr"], "step": honest[0]["steps"][honest[1]],
                            "val_acc": honest[0]["val_curve"][honest[1]]} if honest else None),
    }
    if math.isnan(summary["acc_pl"]["best"]):
        raise ValueError("a finished grid point recorded a NaN accuracy")
    return summary
