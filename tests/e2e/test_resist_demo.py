"""+exp=resist_demo through launch/submit.py, shortened: plain, SKD and UNSIR released and attacked by the
study's linear probe at one seed (the mean and std over seeds are the report's, covered by tests/report), the
report against plain with its learning-curve figure. Reverse-MAML's stage runs in test_resist_resume.py, the
evaluate stage in the DTL demo's tests; the full demo's numbers are in the README and bench/README.md."""
from __future__ import annotations

import csv

import pytest
from cli import stage_metrics, submit

pytestmark = pytest.mark.slow

SHORT = ["plain.epochs=4", "skd.epochs=2", "skd.head.epochs=1", "unsir.epochs=6", "piggyback.seeds=[0]",
         "piggyback.schemes.mit.epochs=4", "piggyback.schemes.mit.evals=2", "stages=[plain,skd,unsir,piggyback,report]"]
METHODS = ("plain", "skd", "unsir")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("out")
    proc = submit("+exp=resist_demo", f"out_root={out}", *SHORT, data_root=data_root, timeout=900)
    return out / "resist_demo", proc


def test_every_method_is_released_and_attacked_by_the_probe(demo):
    exp, proc = demo
    metrics = stage_metrics(exp)
    assert all(m["status"] == "done" for m in metrics.values())
    for method in METHODS:
        assert metrics[method]["model_labels"] == {"method": method}
        assert 0.1 < metrics[method]["acc"]["source"] <= 1.0  # above chance on the beneficial task
        attack = metrics[f"piggyback/{method}/malicious/mit/s0"]
        assert attack["attacker"]["mode"] == "linear" and attack["attacker"]["optim"]["name"] == "adam"
        assert len(attack["grid"]) == 1 and len(attack["grid"][0]["curve"]) == 2
    assert 0.0 <= metrics["skd"]["misses"] <= 1.0 and metrics["skd"]["misses_teacher"] == 1.0
    assert "plain" in proc.stdout and "disposal ratio malicious" in proc.stdout


def test_unsir_forgets_the_malicious_classes_and_keeps_the_beneficial_ones(demo):
    exp, _ = demo
    unsir = stage_metrics(exp)["unsir"]["unsir"]
    assert unsir["before"]["forgotten"] > 0.2  # it knew them (chance is 0.1)
    assert unsir["after"]["forgotten"] <= 0.1 + 0.05  # chance over 10 malicious classes, give or take
    assert unsir["after"]["retained"] >= unsir["before"]["retained"] - 0.05


def test_the_report_takes_plain_as_reference_and_draws_the_probe_curves(demo):
    exp, _ = demo
    with open(exp / "report" / "worst_case.csv") as f:
        cells = {(r["row"], r["column"]): r for r in csv.DictReader(f)}
    ratio = "disposal ratio malicious"
    assert {row for row, column in cells if column == ratio} >= set(METHODS) | {"scratch"}
    assert float(cells["plain", ratio]["value"]) == 0.0 and float(cells["scratch", ratio]["value"]) == 1.0
    for method in METHODS:
        assert cells[method, ratio]["status"] in ("ok", "undefined"), cells[method, ratio]
    assert (exp / "report" / "curves_malicious_mit.png").stat().st_size > 0
