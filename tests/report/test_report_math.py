"""Report math and tables on hand-written metrics.json files: disposal ratio, mean +- std, best-of-grid,
failures that stay failures, and every cell traceable to the files it came from."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from report_csv import table_cells

from trd.report import write_report
from trd.report.cells import (
    Cell,
    aggregate,
    difference,
    disposal_ratio,
    mean_std,
    ratio_cell,
)
from trd.report.records import Record, load_records, variant_name


def test_disposal_ratio_is_0_for_tl_and_1_for_scratch():
    tl, scratch = 0.62, 0.18
    assert disposal_ratio(tl, tl, scratch) == 0.0
    assert disposal_ratio(scratch, tl, scratch) == 1.0
    assert disposal_ratio(0.40, tl, scratch) == pytest.approx(0.5)
    assert disposal_ratio(0.70, tl, scratch) < 0  # gives an attacker more than TL does
    assert disposal_ratio(0.3, 0.5, 0.5) is None  # no scale when TL and scratch tie


def test_ratio_and_difference_cells_carry_every_source():
    def cell(v, src):
        return Cell(v, None, 1, "ok", "acc_pl.final", (src,))

    tl, scratch, x = cell(0.6, "tl"), cell(0.2, "scratch"), cell(0.3, "x")
    r = ratio_cell(x, tl, scratch)
    assert r.value == pytest.approx(0.75) and r.sources == ("x", "tl", "scratch") and r.text() == "0.750"
    assert ratio_cell(tl, tl, scratch).value == 0.0 and ratio_cell(scratch, tl, scratch).value == 1.0
    d = difference(x, tl)
    assert d.value == pytest.approx(-0.3) and d.text() == "-30.00" and d.sources == ("x", "tl")
    failed = Cell(status="failed", sources=("bad",), note="bad: DataError: ...")
    assert ratio_cell(failed, tl, scratch).status == "failed"
    assert difference(x, failed).text() == "failed" and "bad" in difference(x, failed).sources


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert mean_std([0.5]) == (0.5, None)


def _record(tmp: Path, name: str, kind: str, attack: dict, metrics: dict | None) -> Record:
    d = tmp / "stages" / name.replace("/", "_")
    d.mkdir(parents=True)
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    return Record(name, kind, d, {"method": "tl"}, attack, metrics or {})


def test_a_failed_seed_fails_the_cell_instead_of_being_averaged_away(tmp_path):
    done = [_record(tmp_path, f"pl{s}", "piggyback", {"seed": s}, {"status": "done", "acc_pl": {"final": 0.5 + s / 10}})
            for s in range(2)]
    failed = _record(tmp_path, "pl2", "piggyback", {"seed": 2}, {"status": "failed", "error": "DataError: label 7"})
    pending = _record(tmp_path, "pl3", "piggyback", {"seed": 3}, None)
    ok = aggregate(done, "acc_pl.final")
    assert ok.value == pytest.approx(0.55) and ok.n == 2 and ok.std == pytest.approx(math.sqrt(0.005))
    cell = aggregate(done + [failed], "acc_pl.final")
    assert cell.status == "failed" and cell.value is None and "DataError: label 7" in cell.note
    assert failed.metrics_path in cell.sources
    assert aggregate(done + [pending], "acc_pl.final").status == "pending"
    assert aggregate([], "acc_pl.final").status == "n/a"


ATTACK_KEYS = ("evaluates", "attacks", "task", "scheme", "seed")


def _stage(exp: Path, plan: dict, name: str, kind: str, labels: dict, metrics: dict | None, inputs=(),
           lineage: str | None = None, sweep: str = "") -> None:
    """A stage as plan.json lists it (its labels split into model and attack labels) with its metrics.json."""
    d = exp.parent / "stages" / name.replace("/", "_")
    d.mkdir(parents=True, exist_ok=True)
    model = {k: v for k, v in labels.items() if k not in ATTACK_KEYS}
    attack = {k: v for k, v in labels.items() if k in ATTACK_KEYS}
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps({"kind": kind, "stage": name, "model_labels": model,
                                                    "attack_labels": attack, **metrics}))
    plan["stages"][name] = {"kind": kind, "hash": name, "dir": str(d), "model_labels": model, "attack_labels": attack,
                            "inputs": {i: i for i in inputs}, "reported": kind in ("evaluate", "piggyback", "mia"),
                            "lineage": lineage or name, "sweep": sweep}


def _pl(final, best, curve=None, selected=None, val=None, saturated=True):
    return {"status": "done", "acc_pl": {"final": final, "best": best, "selected": selected},
            "selected_point": {"val_acc": val} if val is not None else None,
            "saturation": {"saturated": saturated}, "grid_points": 3, "budget": 100,
            "grid": [{"point": "lr0.1", "lr": 0.1, "status": "done", "curve": curve or [final], "steps": [100]}]}


@pytest.fixture
def experiment(tmp_path) -> Path:
    """TL, TGT, a GC model over a lam sweep and a scratch reference, two PL seeds, two schemes, a failed job."""
    exp = tmp_path / "out" / "exp"
    exp.mkdir(parents=True)
    plan = {"format": 2, "settings": {"report": {"paper_scheme": "finetune", "reference": "tl"}}, "stages": {}}
    models = {"transfer": {"method": "tl"}, "tgt": {"method": "tgt"},
              "dispose/gc": {"method": "gc", "lam": 0.5}, "dispose/gc[lam=0.9]": {"method": "gc", "lam": 0.9}}
    acc = {"transfer": {"source": 0.6, "target": 0.7}, "tgt": {"target": 0.4},
           "dispose/gc": {"source": 0.1, "target": 0.68}, "dispose/gc[lam=0.9]": {"source": 0.05, "target": 0.6}}
    for name, labels in models.items():
        _stage(exp, plan, f"evaluate/{name}", "evaluate", {**labels, "evaluates": name},
               {"status": "done", "acc": acc[name]})
    pl = {  # (final, best) per seed; finetune is the paper scheme
        ("transfer", "finetune"): [(0.80, 0.82), (0.78, 0.80)], ("transfer", "linear"): [(0.70, 0.85), (0.71, 0.79)],
        ("tgt", "finetune"): [(0.50, 0.55), (0.52, 0.53)], ("tgt", "linear"): [(0.40, 0.41), (0.42, 0.43)],
        ("dispose/gc", "finetune"): [(0.30, 0.33), (0.32, 0.35)], ("dispose/gc", "linear"): [(0.20, 0.21), (0.22, 0.23)],
        ("dispose/gc[lam=0.9]", "finetune"): [(0.25, 0.30), (0.27, 0.31)],
        ("dispose/gc[lam=0.9]", "linear"): [(0.20, 0.21), None],  # seed 1 failed
        ("scratch", "finetune"): [(0.20, 0.25), (0.22, 0.27)], ("scratch", "linear"): [(0.10, 0.12), (0.11, 0.13)],
    }
    for (model, scheme), seeds in pl.items():
        labels = {**models.get(model, {"method": "scratch"}), "attacks": model, "task": "synth", "scheme": scheme}
        for seed, result in enumerate(seeds):
            metrics = _pl(*result) if result else {"status": "failed", "error": "DataError: data.piggyback.synth: boom"}
            _stage(exp, plan, f"piggyback/{model}/synth/{scheme}/s{seed}", "piggyback", {**labels, "seed": seed},
                   metrics, lineage=f"piggyback/{model}/{scheme}")
    _stage(exp, plan, "mia/transfer", "mia", {"method": "tl", "attacks": "transfer"},
           {"status": "done", "mia": {"loss": {"acc": 0.55, "auc": 0.58}, "classifier": {"acc": 0.52, "auc": 0.53}}})
    _stage(exp, plan, "mia/tgt", "mia", {"method": "tgt", "attacks": "tgt"},
           {"status": "done", "mia": None, "skipped": "no source head"})
    _stage(exp, plan, "report", "report", {}, None)
    (exp / "plan.json").write_text(json.dumps(plan))
    return exp


def test_tables_follow_the_paper_layout_with_means_over_seeds(experiment):
    summary = write_report(experiment)
    assert summary["paper_scheme"] == "finetune"
    t1 = table_cells(experiment, "table1")
    assert float(t1[("tl", "disposal ratio synth")]["value"]) == 0.0
    assert float(t1[("scratch", "disposal ratio synth")]["value"]) == 1.0
    # gc lam=0.5: Acc_pl 0.31 (mean of 0.30, 0.32); TL 0.79; scratch 0.21
    assert float(t1[("gc lam=0.5", "ΔAcc_pl synth vs TL")]["value"]) == pytest.approx(0.31 - 0.79)
    assert float(t1[("gc lam=0.5", "disposal ratio synth")]["value"]) == pytest.approx((0.79 - 0.31) / (0.79 - 0.21))
    assert float(t1[("gc lam=0.5", "ΔAcc_t vs TGT")]["value"]) == pytest.approx(0.68 - 0.4)
    assert float(t1[("gc lam=0.5", "ΔAcc_t vs TL")]["value"]) == pytest.approx(0.68 - 0.7)
    assert t1[("gc lam=0.5", "ΔAcc_pl synth vs TL")]["text"] == "-48.00 ± 2.00"  # sqrt(1.41^2 + 1.41^2)
    assert t1[("tl", "ΔAcc_pl synth vs TL")]["text"] == "+0.00"  # TL against itself has no spread
    reference = [k for k in t1 if k[0].startswith("Reference")]
    assert {t1[k]["text"] for k in reference} == {"40.00", "70.00", "79.00 ± 1.41", "21.00 ± 1.41"}
    # The worst case: per attacked model the best over schemes and attacker seeds (TL: 0.82, 0.85, 0.80, 0.79).
    worst = table_cells(experiment, "worst_case")
    assert float(worst[("Reference (absolute: Acc_t TGT, Acc_t TL, Acc_pl TL, Acc_pl scratch)",
                        "ΔAcc_pl synth vs TL")]["value"]) == pytest.approx(0.85)
    t3 = table_cells(experiment, "table3")
    assert t3[("tgt", "Acc_s")]["status"] == "n/a" and t3[("tl", "Acc_s")]["text"] == "60.00"
    assert t3[("scratch", "Acc_t")]["status"] == "n/a"
    mia = table_cells(experiment, "mia")
    assert mia[("tl", "loss auc")]["text"] == "0.580" and mia[("tgt", "loss acc")]["status"] == "skipped"


def test_a_failed_pl_job_shows_as_failed_and_is_listed(experiment):
    write_report(experiment)
    lam09 = "gc lam=0.9"
    assert table_cells(experiment, "table1")[(lam09, "ΔAcc_pl synth vs TL")]["text"] != "failed"  # paper scheme ran
    worst = table_cells(experiment, "worst_case")[(lam09, "ΔAcc_pl synth vs TL")]
    assert worst["text"] == "failed" and "boom" in worst["note"]
    assert any(s.endswith("piggyback_dispose_gc[lam=0.9]_synth_linear_s1/metrics.json")
               for s in worst["sources"].split(";"))
    assert table_cells(experiment, "piggyback")[(f"{lam09} · synth · linear", "final")]["text"] == "failed"
    md = (experiment / "report" / "report.md").read_text()
    assert "| piggyback/dispose/gc[lam=0.9]/synth/linear/s1 | failed | DataError: data.piggyback.synth: boom |" in md


def test_the_honest_attacker_chooses_by_validation_and_unsaturated_attacks_are_flagged(tmp_path):
    exp = tmp_path / "out" / "exp"
    exp.mkdir(parents=True)
    plan = {"format": 2, "settings": {"report": {"paper_scheme": "a", "reference": "tl"}}, "stages": {}}
    runs = {  # (model, scheme, seed) -> (final, best, selected, validation accuracy of the selection, saturated)
        ("transfer", "a", 0): (0.7, 0.8, 0.75, 0.9, True), ("transfer", "b", 0): (0.6, 0.9, 0.6, 0.7, False),
        ("transfer", "a", 1): (0.7, 0.7, 0.65, 0.95, True),
        ("scratch", "a", 0): (0.2, 0.3, 0.25, 0.4, True), ("scratch", "b", 0): (0.2, 0.25, 0.2, 0.3, True)}
    for (model, scheme, seed), (final, best, selected, val, saturated) in runs.items():
        labels = {"method": "tl" if model == "transfer" else "scratch", "attacks": model, "task": "t", "scheme": scheme,
                  "seed": seed}
        _stage(exp, plan, f"piggyback/{model}/t/{scheme}/s{seed}", "piggyback", labels,
               _pl(final, best, selected=selected, val=val, saturated=saturated), lineage=f"{model}/{scheme}")
    (exp / "plan.json").write_text(json.dumps(plan))
    write_report(exp)
    honest = table_cells(exp, "honest")
    # TL: the highest validation accuracy is scheme a, seed 1 (0.95): its test accuracy 0.65.
    assert float(honest[("tl", "ΔAcc_pl t vs TL")]["value"]) == 0.0
    reference = next(k for k in honest if k[0].startswith("Reference") and k[1] == "ΔAcc_pl t vs TL")
    assert honest[reference]["value"] == "0.65"
    worst = table_cells(exp, "worst_case")
    # The worst case takes TL's 0.9 from scheme b, which did not saturate: the number is flagged as a lower bound.
    assert worst[reference]["text"] == "90.00 †"
    assert honest[reference]["text"] == "65.00"  # the honest choice came from a saturated attack
    by_scheme = table_cells(exp, "piggyback")
    assert by_scheme[("tl · t · a", "saturated")]["text"] == "1.000"
    assert by_scheme[("tl · t · b", "saturated")]["text"] == "0.000"
    assert by_scheme[("tl · t · a", "points")]["text"] == "3" and by_scheme[("tl · t · a", "budget")]["text"] == "100"


def test_every_cell_is_traceable_to_metrics_json(experiment):
    write_report(experiment)
    records = {r.metrics_path: r for r in load_records(experiment)}
    md = (experiment / "report" / "report.md").read_text()
    for table in ("table1", "worst_case", "honest", "table3", "piggyback", "mia"):
        rows = list(table_cells(experiment, table).values())
        md_rows = [line for line in md.split(f"[{table}.csv]")[0].rsplit("## ", 1)[1].splitlines()
                   if line.startswith("| ") and not line.startswith("| model")]
        assert sum(line.count(" | ") for line in md_rows) == len(rows)  # one CSV line per markdown cell
        for row in rows:
            if row["status"] in ("ok", "failed", "skipped"):
                assert row["sources"], row
                assert all(s in records for s in row["sources"].split(";")), row


def test_lam_sweep_and_curves_are_drawn(experiment):
    summary = write_report(experiment)
    assert "lam_sweep_synth.png" in summary["plots"] and "curves_synth_finetune.png" in summary["plots"]
    for name in summary["plots"]:
        assert (experiment / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_cli_errors_on_a_directory_that_is_no_experiment(tmp_path, capsys):
    from trd.report.cli import main

    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trd: error: ") and "has no plan.json" in err and "\n" not in err


def _seedless(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


def _swept_models(tmp_path, points: dict[str, tuple[dict, float]]) -> Path:
    """Disposed models planned by a sweep (sweep point -> (their config, target accuracy)), each with its
    evaluate stage, all with the same labels; their lineage is their config without seeds, as trd.plan makes it."""
    exp = tmp_path / "out" / "exp"
    exp.mkdir(parents=True)
    plan = {"format": 2, "stages": {}}
    labels = {"method": "gc", "lam": 0.5}
    for point, (config, target) in points.items():
        model = f"dispose/gc[{point}]" if point else "dispose/gc"
        _stage(exp, plan, model, "dispose", labels, {"status": "done"}, lineage=_seedless(config), sweep=point)
        _stage(exp, plan, f"evaluate/{model}", "evaluate", {**labels, "evaluates": "dispose/gc"},
               {"status": "done", "acc": {"source": 0.1, "target": target}}, lineage=f"evaluate {_seedless(config)}",
               sweep=point)
        plan["stages"][f"evaluate/{model}"]["inputs"] = {"model": model}  # role -> stage name, as in plan.json
    (exp / "plan.json").write_text(json.dumps(plan))
    return exp


def test_sweep_points_over_an_unlabelled_setting_stay_separate_rows(tmp_path):
    # A Hydra sweep over dispose.optim.lr: both disposed models carry the same labels; their configs differ,
    # and the sweep point each belongs to (plan.json's sweep field) names the difference. Averaging them as
    # seeds would be a wrong number.
    exp = _swept_models(tmp_path, {"": ({"seed": 0, "lr": 0.001}, 0.6),
                                   "dispose.optim.lr=0.01": ({"seed": 0, "lr": 0.01}, 0.3)})
    write_report(exp)
    cells = table_cells(exp, "table3")
    assert cells[("gc lam=0.5", "Acc_t")]["text"] == "60.00"
    assert cells[("gc lam=0.5 [dispose.optim.lr=0.01]", "Acc_t")]["text"] == "30.00"
    # An override a label already shows is not repeated: the lam sweep's second point is just 'gc lam=0.9'.
    assert variant_name(json.dumps({"method": "gc", "lam": 0.9, "sweep": "dispose.lam=0.9"})) == "gc lam=0.9"


def test_swept_seeds_are_replicates_whatever_the_sweep_points_say(tmp_path):
    # seed x lr: models differing only in seed are one variant (mean over them), the other lr is another, and
    # a list value keeps its commas in the row name.
    exp = _swept_models(tmp_path, {
        "seed=0,dispose.optim.lr=[0.001]": ({"seed": 0, "lr": [0.001]}, 0.6),
        "seed=1,dispose.optim.lr=[0.001]": ({"seed": 1, "lr": [0.001]}, 0.4),
        "seed=0,dispose.optim.lr=[0.01,0.1]": ({"seed": 0, "lr": [0.01, 0.1]}, 0.3),
        "seed=1,dispose.optim.lr=[0.01,0.1]": ({"seed": 1, "lr": [0.01, 0.1]}, 0.2),
    })
    write_report(exp)
    cells = table_cells(exp, "table3")
    assert {row for row, _ in cells} == {"gc lam=0.5 [dispose.optim.lr=[0.001]]", "gc lam=0.5 [dispose.optim.lr=[0.01,0.1]]"}
    first, second = cells[("gc lam=0.5 [dispose.optim.lr=[0.001]]", "Acc_t")], \
        cells[("gc lam=0.5 [dispose.optim.lr=[0.01,0.1]]", "Acc_t")]
    assert first["n"] == second["n"] == "2"
    assert float(first["value"]) == pytest.approx(0.5) and float(second["value"]) == pytest.approx(0.25)


def test_a_sweep_over_attacker_settings_gives_each_setting_its_own_scheme(tmp_path):
    exp = _swept_models(tmp_path, {"": ({"seed": 0, "lr": 0.001}, 0.6)})
    plan = json.loads((exp / "plan.json").read_text())
    labels = {"method": "gc", "lam": 0.5, "attacks": "dispose/gc", "task": "synth", "scheme": "finetune", "seed": 0}
    for point, epochs, acc in (("", 3, 0.5), ("piggyback.schemes.finetune.epochs=10", 10, 0.7)):
        name = f"piggyback/dispose/gc/synth/finetune/s0[{point}]" if point else "piggyback/dispose/gc/synth/finetune/s0"
        _stage(exp, plan, name, "piggyback", labels, _pl(acc, acc), lineage=f"epochs={epochs}", sweep=point)
        plan["stages"][name]["inputs"] = {"model": "dispose/gc"}
    (exp / "plan.json").write_text(json.dumps(plan))
    write_report(exp, paper_scheme="finetune")
    cells = table_cells(exp, "piggyback")
    assert cells[("gc lam=0.5 · synth · finetune", "final")]["text"] == "50.00"
    assert cells[("gc lam=0.5 · synth · finetune [piggyback.schemes.finetune.epochs=10]", "final")]["text"] == "70.00"
    assert table_cells(exp, "table3")[("gc lam=0.5", "Acc_pl synth best-of-grid")]["text"] == "70.00"


def test_the_reference_row_is_a_setting(experiment):
    # The resistant-training setting compares against a plainly trained model, not TL: here TGT stands in.
    write_report(experiment, reference="tgt")
    t1 = table_cells(experiment, "table1")
    assert "ΔAcc_t vs TL" not in {column for _, column in t1}
    # disposal ratio of TL against TGT: (0.51 - 0.79) / (0.51 - 0.21)
    assert float(t1[("tl", "disposal ratio synth")]["value"]) == pytest.approx((0.51 - 0.79) / (0.51 - 0.21))
    assert float(t1[("tgt", "disposal ratio synth")]["value"]) == 0.0


def test_an_experiment_planned_by_an_older_trd_must_be_planned_again(experiment, capsys):
    from trd.report.cli import main

    plan = json.loads((experiment / "plan.json").read_text())
    del plan["format"]
    (experiment / "plan.json").write_text(json.dumps(plan))
    assert main([str(experiment)]) == 2
    err = capsys.readouterr().err.strip()
    assert "written by an older trd (plan format 1)" in err and "launch/submit.py" in err and "\n" not in err


def test_single_seed_accuracies_carry_their_standard_error_and_a_ratio_without_scale_is_undefined(tmp_path):
    exp = tmp_path / "out" / "exp"
    exp.mkdir(parents=True)
    plan = {"format": 2, "settings": {"report": {"paper_scheme": "a", "reference": "tl"}}, "stages": {}}
    # TL 0.70 and scratch 0.68 on 500 test images: a 2-point gap with a standard error of 2.9 points.
    for model, method, acc in (("transfer", "tl", 0.70), ("scratch", "scratch", 0.68), ("dispose/gc", "gc", 0.5)):
        labels = {"method": method, "attacks": model, "task": "t", "scheme": "a", "seed": 0}
        _stage(exp, plan, f"piggyback/{model}/t/a/s0", "piggyback", labels, {**_pl(acc, acc), "test_samples": 500},
               lineage=model)
    (exp / "plan.json").write_text(json.dumps(plan))
    write_report(exp)
    t1 = table_cells(exp, "table1")
    reference = next(k for k in t1 if k[0].startswith("Reference") and k[1] == "ΔAcc_pl t vs TL")
    assert t1[reference]["text"] == f"70.00 (SE {100 * math.sqrt(0.7 * 0.3 / 500):.2f})"
    ratio = t1[("gc", "disposal ratio t")]
    assert ratio["status"] == "undefined" and "less than twice its standard error" in ratio["note"]
    md = (exp / "report" / "report.md").read_text()
    assert "Undefined cells:" in md and "not clearly positive" in md


def test_the_headline_is_the_worst_case_in_absolute_numbers(experiment):
    from trd.report import headline
    from trd.report.write import table_text

    table = headline(experiment)
    assert table.columns == ["Acc_t", "Acc_pl synth", "disposal ratio synth"]
    rows = dict(table.rows)
    # Per attacked model the best over both schemes and both attacker seeds, as the worst-case table.
    tl, scratch, gc = 0.85, 0.27, 0.35
    assert rows["tl"]["Acc_pl synth"].value == pytest.approx(tl)
    assert rows["tl"]["Acc_t"].value == pytest.approx(0.7) and rows["scratch"]["Acc_t"].status == "n/a"
    assert rows["gc lam=0.5"]["disposal ratio synth"].value == pytest.approx((tl - gc) / (tl - scratch))
    lines = table_text(table).splitlines()
    assert lines[0] == "Headline: the worst-case attacker"
    assert lines[2].split() == ["tl", "70.00", "85.00", "0.000"]


def test_without_attacks_the_headline_is_the_target_accuracy(tmp_path):
    from trd.report import headline

    exp = tmp_path / "exp"
    exp.mkdir()
    plan = {"format": 2, "settings": {}, "stages": {}}
    _stage(exp, plan, "evaluate/transfer", "evaluate", {"method": "tl", "evaluates": "transfer"},
           {"status": "done", "acc": {"target": 0.5}})
    (exp / "plan.json").write_text(json.dumps(plan))
    table = headline(exp)
    assert (table.title, table.columns, table.caption) == ("Headline: target accuracy", ["Acc_t"], "")
