"""The seen/unseen split of a non-fine-tunable model's attackers: which piggyback grid points its simulated-attacker
distribution covers, and the seen_unseen table's numbers on a hand-written experiment."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from report_csv import table_cells

from trd.report import write_report
from trd.report.attacker_split import optimiser_family, seen_by

DISTRIBUTION = {"optimizers": {"momentum": [0.001, 0.01], "adam": [1e-4, 1e-3]}, "modes": ["full", "linear"],
                "steps": [1, 4]}


def _scheme(mode: str, name: str, **optim) -> dict:
    return {"mode": mode, "steps": 1000, "optim": {"name": name, "lr": [0.001], **optim}}


def _point(lr: float, weight_decay: float = 0.0) -> dict:
    return {"lr": lr, "weight_decay": weight_decay}


@pytest.mark.parametrize("scheme, point, seen", [
    (_scheme("full", "sgd", momentum=0.9), _point(0.005), True),
    (_scheme("full", "sgd"), _point(0.005), True),  # no momentum given: torch's SGD gets trd's default 0.9
    (_scheme("full", "sgd", momentum=0.0), _point(0.005), False),  # plain SGD: never simulated
    (_scheme("linear", "adam"), _point(5e-4, 0.01), True),  # adam is adam, weight decay or not
    (_scheme("linear", "adamw"), _point(5e-4, 0.0), True),  # adamw without decay is Adam's update
    (_scheme("linear", "adamw"), _point(5e-4, 0.05), False),  # decoupled decay: another optimiser
    (_scheme("last_k", "sgd", momentum=0.9), _point(0.005), False),  # mode never simulated
    (_scheme("full", "adam"), _point(0.005), False),  # inside momentum's range, outside adam's
])
def test_a_point_is_seen_when_mode_optimiser_family_and_lr_are_all_drawn(scheme, point, seen):
    assert seen_by(point, scheme, DISTRIBUTION) is seen


def test_a_mode_or_optimiser_the_distribution_leaves_out_is_unseen():
    momentum_full_only = {"optimizers": {"momentum": [0.001, 0.01]}, "modes": ["full"], "steps": [1, 2]}
    assert seen_by(_point(0.005), _scheme("full", "sgd", momentum=0.9), momentum_full_only)
    assert not seen_by(_point(0.005), _scheme("linear", "sgd", momentum=0.9), momentum_full_only)
    assert not seen_by(_point(5e-4), _scheme("full", "adam"), momentum_full_only)


def test_learning_rate_range_edges_are_inclusive_up_to_round_off():
    sgd = _scheme("full", "sgd", momentum=0.9)
    for lr, seen in ((0.001, True), (0.01, True), (0.01 * (1 + 1e-12), True), (0.001 * (1 - 1e-12), True),
                     (0.0103, False), (0.00099, False)):
        assert seen_by(_point(lr), sgd, DISTRIBUTION) is seen, lr
    # 0.01 * 3 is 0.030000000000000002 in floating point: still the edge 0.03.
    assert seen_by(_point(0.01 * 3), sgd, {"optimizers": {"momentum": [0.001, 0.03]}, "modes": ["full"]})


def test_optimiser_families():
    assert optimiser_family({"name": "sgd", "momentum": 0.5}, 0.0) == "momentum"
    assert optimiser_family({"name": "sgd", "momentum": 0}, 0.0) == "sgd"
    assert optimiser_family({"name": "adam"}, 0.1) == "adam"
    assert optimiser_family({"name": "adamw"}, 0.0) == "adam"
    assert optimiser_family({"name": "adamw"}, 1e-4) == "adamw"


# ---- the table -------------------------------------------------------------------------------------------------

FINETUNE = {"mode": "full", "steps": 1000, "optim": {"name": "sgd", "lr": [0.001, 0.01, 0.1], "momentum": 0.9,
                                                      "weight_decay": [5e-4]}}
PROBE = {"mode": "linear", "steps": 1000, "optim": {"name": "adamw", "lr": [1e-3], "weight_decay": [0.0, 0.05]}}


def _grid(points: list[tuple[float, float, list[float] | None]]) -> list[dict]:
    """(lr, weight decay, test curve) per point; a curve of None is a point that diverged."""
    return [{"point": f"lr{lr:g}-wd{wd:g}", "lr": lr, "weight_decay": wd, "augment": True, "budget_factor": 1,
             "status": "done" if curve else "diverged", "steps": [500, 1000][:len(curve or [])], "curve": curve or []}
            for lr, wd, curve in points]


def _attack(scheme: dict, points: list[tuple[float, float, list[float] | None]]) -> dict:
    grid = _grid(points)
    best = max(max(p["curve"]) for p in grid if p["curve"])
    return {"status": "done", "acc_pl": {"final": grid[0]["curve"][-1] if grid[0]["curve"] else None, "best": best,
                                         "selected": None},
            "saturation": {"saturated": True}, "attacker": scheme, "grid": grid}


def _finetune(a: list[float] | None, b: list[float] | None, c: list[float] | None) -> dict:
    """lr 0.001 and 0.01 (the momentum range's edges: seen), lr 0.1 (beyond it: unseen)."""
    return _attack(FINETUNE, [(0.001, 5e-4, a), (0.01, 5e-4, b), (0.1, 5e-4, c)])


def _only_low_lr(curve: list[float]) -> dict:
    """A grid of one seen point: lr 0.001."""
    return _attack(FINETUNE, [(0.001, 5e-4, curve)])


def _probe(no_decay: list[float], decay: list[float]) -> dict:
    """adamw at lr 1e-3: without weight decay seen (Adam), with it unseen."""
    return _attack(PROBE, [(1e-3, 0.0, no_decay), (1e-3, 0.05, decay)])


class _Plan:
    """plan.json and metrics.json files as trd writes them, for the stages a report reads."""

    def __init__(self, exp: Path):
        self.exp, self.stages = exp, {}

    def stage(self, name: str, kind: str, model: dict, attack: dict, metrics: dict | None, lineage: str,
              model_input: str | None = None) -> None:
        d = self.exp.parent / "stages" / name.replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        if metrics is not None:
            (d / "metrics.json").write_text(json.dumps({"kind": kind, "stage": name, **metrics}))
        self.stages[name] = {"kind": kind, "hash": name, "dir": str(d), "model_labels": model, "attack_labels": attack,
                             "inputs": {"model": model_input} if model_input else {},
                             "reported": kind in ("evaluate", "piggyback"), "lineage": lineage, "sweep": ""}

    def piggyback(self, model: str, method: str, task: str, scheme: str, metrics: dict | None,
                  model_input: str | None = None) -> None:
        attack = {"attacks": model, "task": task, "scheme": scheme, "seed": 0}
        self.stage(f"piggyback/{model}/{task}/{scheme}", "piggyback", {"method": method}, attack, metrics,
                   lineage=f"piggyback/{method}/{task}/{scheme}", model_input=model_input)

    def write(self) -> None:
        (self.exp / "plan.json").write_text(json.dumps({"format": 2, "settings": {"report": {"paper_scheme": "finetune"}},
                                                        "stages": self.stages}))


def _experiment(tmp_path, simulated: dict | None = DISTRIBUTION) -> Path:
    """TL, scratch and two replicates (seeds) of one nft model, attacked on task `a` by a finetune and a probe
    scheme, and on task `b` by finetune at lr 0.001 only (no unseen point), where scratch's attack failed."""
    exp = tmp_path / "out" / "exp"
    exp.mkdir(parents=True)
    plan = _Plan(exp)
    extra = {"simulated_attackers": simulated} if simulated else {}
    nft = {  # replicate -> (finetune on a, probe on a)
        "dispose/nft": (_finetune([0.10, 0.20], [0.15, 0.12], [0.30, 0.40]), _probe([0.25], [0.35])),
        "dispose/nft[seed=1]": (_finetune([0.18], [0.22], None), _probe([0.12], [0.30]))}
    for name, (finetune, probe) in nft.items():
        # Replicates: same lineage (seeds left out), different stages.
        plan.stage(name, "dispose", {"method": "nft"}, {}, {"status": "done", **extra}, lineage="dispose/nft")
        plan.piggyback(name, "nft", "a", "finetune", finetune, model_input=name)
        plan.piggyback(name, "nft", "a", "probe", probe, model_input=name)
        plan.piggyback(name, "nft", "b", "finetune", _only_low_lr([0.30] if name == "dispose/nft" else [0.34]),
                       model_input=name)
    plan.piggyback("transfer", "tl", "a", "finetune", _finetune([0.60], [0.70], [0.80]))
    plan.piggyback("transfer", "tl", "a", "probe", _probe([0.50], [0.55]))
    plan.piggyback("transfer", "tl", "b", "finetune", _only_low_lr([0.65]))
    plan.piggyback("scratch", "scratch", "a", "finetune", _finetune([0.10], [0.20], [0.30]))
    plan.piggyback("scratch", "scratch", "a", "probe", _probe([0.05], [0.06]))
    plan.piggyback("scratch", "scratch", "b", "finetune", {"status": "failed", "error": "DataError: boom"})
    plan.write()
    return exp


def test_seen_unseen_compares_each_side_with_the_references_on_the_same_side(tmp_path):
    exp = _experiment(tmp_path)
    summary = write_report(exp)
    assert "seen_unseen" in summary["tables"]
    cells = table_cells(exp, "seen_unseen")
    assert {row for row, _ in cells} == {"nft"}  # the references are no rows of their own
    # Seen per replicate: max(0.20, 0.15, 0.25) and max(0.18, 0.22, 0.12); unseen: max(0.40, 0.35) and 0.30
    # (its lr 0.1 point diverged and is left out).
    seen, unseen = cells[("nft", "Acc_pl seen a")], cells[("nft", "Acc_pl unseen a")]
    assert float(seen["value"]) == pytest.approx(0.235) and seen["n"] == "2"
    assert float(seen["std"]) == pytest.approx(math.sqrt(2 * 0.015 ** 2))
    assert float(unseen["value"]) == pytest.approx(0.35) and unseen["n"] == "2"
    # TL seen 0.70 (not its overall best 0.80, an unseen point), scratch seen 0.20; unseen 0.80 and 0.30.
    assert float(cells[("nft", "disposal ratio seen a")]["value"]) == pytest.approx((0.70 - 0.235) / (0.70 - 0.20))
    assert float(cells[("nft", "disposal ratio unseen a")]["value"]) == pytest.approx((0.80 - 0.35) / (0.80 - 0.30))
    sources = cells[("nft", "disposal ratio seen a")]["sources"]
    assert "piggyback_transfer_a_probe" in sources and "piggyback_scratch_a_finetune" in sources


def test_a_side_without_grid_points_is_missing_and_failures_stay_failures(tmp_path):
    exp = _experiment(tmp_path)
    write_report(exp)
    cells = table_cells(exp, "seen_unseen")
    assert float(cells[("nft", "Acc_pl seen b")]["value"]) == pytest.approx(0.32)
    unseen = cells[("nft", "Acc_pl unseen b")]
    assert unseen["status"] == "n/a" and "no grid point of nft on b is unseen" in unseen["note"]
    assert cells[("nft", "disposal ratio seen b")]["status"] == "failed"  # scratch's attack on b failed
    assert "boom" in cells[("nft", "disposal ratio seen b")]["note"]


def test_the_caption_names_the_simulated_inner_steps_and_the_distribution(tmp_path):
    exp = _experiment(tmp_path)
    write_report(exp)
    md = (exp / "report" / "report.md").read_text()
    section = md.split("attackers inside and outside the training distribution", 1)[1]
    assert "Inner steps are not compared" in section and "(at most 4)" in section
    assert "momentum lr [0.001, 0.01], adam lr [0.0001, 0.001]; modes full, linear; 1-4 inner steps" in section
    assert "[seen_unseen.csv](seen_unseen.csv)" in section


def test_without_an_nft_model_there_is_no_seen_unseen_table(tmp_path):
    exp = _experiment(tmp_path, simulated=None)
    summary = write_report(exp)
    assert "seen_unseen" not in summary["tables"] and "worst_case" in summary["tables"]
    assert not (exp / "report" / "seen_unseen.csv").exists()
