"""The attacker's grid finds its own edge: a best point at the edge of the learning rates or of the budget
grows the grid (recorded, up to the limits), and the finished grid says whether it saturated."""
from __future__ import annotations

import math

import pytest

from trd.attacks.grid_search import (
    Point,
    extensions,
    initial_points,
    saturation,
    summarise,
    varying_axes,
)
from trd.losses.finite import NonFiniteError

EXTEND = {"lr_factor": 3.0, "lr_steps": 2, "lr_range": [1e-5, 1.0], "budget_doublings": 1}


def _run(point: Point, peak_lr: float, evals: int = 4, diverge_above: float = math.inf, plateau: int = 1) -> dict:
    """A synthetic attack: accuracy peaks at peak_lr and grows with the budget up to `plateau` doublings, then
    stops improving; it rises over the run's evaluations."""
    result = point.as_dict(())
    if point.lr > diverge_above:
        return {**result, "status": "diverged", "error": "non-finite loss", "steps": [], "curve": []}
    top = 0.9 - 0.1 * abs(math.log10(point.lr / peak_lr)) - 0.05 * max(0, plateau - point.budget_factor)
    curve = [top * (e + 1) / evals for e in range(evals)]
    return {**result, "status": "done", "steps": [25 * (e + 1) * point.budget_factor for e in range(evals)],
            "curve": curve, "val_curve": curve}


def search(lrs, extend, **attack) -> tuple[list[dict], list[str]]:
    results = [_run(p, **attack) for p in initial_points(lrs, [0.0], [True])]
    reasons = []
    while True:
        new = extensions(results, lrs, extend, tolerance=0.01)
        if not new:
            return results, reasons
        for point, reason in new:
            results.append(_run(point, **attack))
            reasons.append(f"{point.lr:g}x{point.budget_factor}: {reason}")


def test_the_initial_grid_is_the_product_of_the_lists_with_the_fixed_setting_first():
    points = initial_points([0.01, 0.1], [5e-4, 0.0], [True, False])
    assert points[0] == Point(0.01, 5e-4, True) and len(points) == 8
    vary = varying_axes([5e-4, 0.0], [True])
    assert vary == ("weight_decay",) and points[0].name(vary) == "lr0.01-wd0.0005"
    assert Point(0.1, 0.0, False, 2).name(()) == "lr0.1-x2"


def test_a_best_learning_rate_at_the_upper_edge_grows_the_grid_until_it_is_interior():
    results, reasons = search([0.01, 0.03], EXTEND, peak_lr=0.1)
    lrs = sorted({r["lr"] for r in results})
    assert lrs == [0.01, 0.03, 0.09, 0.27]  # 0.09 was best at the edge, 0.27 made it interior
    assert "0.09x1: best lr 0.03 (test, oracle) at the upper edge" in reasons
    sat = saturation(results, EXTEND, tolerance=0.01)
    assert sat["saturated"], sat


def test_the_extension_limit_and_the_learning_rate_range_stop_the_grid_and_say_it_did_not_saturate():
    results, _ = search([0.001, 0.003], {**EXTEND, "lr_steps": 1}, peak_lr=0.5)
    assert sorted({r["lr"] for r in results}) == [0.001, 0.003, 0.009]
    sat = saturation(results, EXTEND, tolerance=0.01)
    assert not sat["saturated"] and "upper edge" in sat["reasons"][0] and "extension limit" in sat["reasons"][0]
    capped, _ = search([0.3, 0.9], EXTEND, peak_lr=5.0)
    assert max(r["lr"] for r in capped) == 0.9  # 2.7 would leave lr_range
    assert not saturation(capped, EXTEND)["saturated"]
    assert not saturation(search([0.01, 0.03], None, peak_lr=0.1)[0], None)["saturated"]


def test_a_diverged_point_beyond_the_edge_closes_that_side():
    results, _ = search([0.01, 0.03], EXTEND, peak_lr=0.1, diverge_above=0.05)
    assert [r["status"] for r in results if r["lr"] == 0.09] == ["diverged"]
    assert max(r["lr"] for r in results) == 0.09  # nothing tried beyond a diverged point
    assert saturation(results, EXTEND, tolerance=0.01)["saturated"]


def test_the_budget_doubles_while_it_helps_and_stops_when_it_no_longer_does():
    # Doubling helps once (plateau 2): x2 beats x1 by 0.05, then x4 (with a limit of 2 doublings) gains nothing.
    results, reasons = search([0.03, 0.1, 0.3], {**EXTEND, "budget_doublings": 2}, peak_lr=0.1, plateau=2)
    factors = sorted(r["budget_factor"] for r in results if r["lr"] == 0.1)
    assert factors == [1, 2, 4] and any("twice the budget" in r for r in reasons)
    assert saturation(results, EXTEND, tolerance=0.01)["saturated"]
    # With one doubling allowed, x2 still gained: the budget limit stops it and saturation says so.
    short, _ = search([0.03, 0.1, 0.3], EXTEND, peak_lr=0.1, plateau=3)
    sat = saturation(short, EXTEND, tolerance=0.01)
    assert not sat["saturated"] and "doubling limit reached" in sat["reasons"][0]


def test_summary_selects_by_test_and_by_validation_and_leaves_diverged_points_out():
    def result(name, status, curve, val):
        return {"point": name, "lr": 0.1, "weight_decay": 0.0, "augment": True, "budget_factor": 1, "status": status,
                "steps": [10, 20, 30][:len(curve)], "curve": curve, "val_curve": val, "error": "non-finite loss"}

    points = [result("lr1", "diverged", [0.9], [0.9]), result("lr0.1", "done", [0.2, 0.5, 0.4], [0.3, 0.35, 0.6]),
              result("lr0.01", "done", [0.3, 0.45, 0.45], [0.2, 0.2, 0.2])]
    summary = summarise(points)
    assert summary["acc_pl"] == {"final": None, "best": 0.5, "selected": 0.4}
    assert summary["best_point"] == {"point": "lr0.1", "lr": 0.1, "step": 20}
    assert summary["selected_point"]["step"] == 30 and summary["selected_point"]["val_acc"] == 0.6
    with pytest.raises(NonFiniteError, match="every grid point diverged"):
        summarise(points[:1])
    without_val = summarise([{**p, "val_curve": None} for p in points[1:]])
    assert without_val["acc_pl"]["selected"] is None and without_val["selected_point"] is None
