"""The demo with its attack stages through launch/submit.py: PL and MIA for every released model, the report as
the last job with every cell traceable to a metrics.json, and a failed PL job reported as failed."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli import FAST, REPO, stage_metrics, submit

from trd.report.cells import dig

pytestmark = pytest.mark.slow

# A quarter of the source data, half the piggyback data, 30 steps of one scheme at one point and a few hundred MIA
# samples: the pipeline's shape, not its accuracy (grids are tested in test_piggyback_stage.py and
# tests/attacks, best-of-grid over schemes in tests/report). The piggyback fraction also puts `fraction` into the
# PL labels.
# Disposal by RAND only: a disposed model with a lam label at a fraction of GC's cost (tests/e2e/test_dispose_cli.py
# covers GC itself).
SMALL = ["+data.source.fraction=0.25", "data.piggyback.synth.fraction=0.5", "piggyback.schemes.finetune.steps=30",
         "piggyback.schemes.finetune.evals=2", "piggyback.schemes.finetune.extend=null",
         "piggyback.schemes.finetune.optim.lr=[0.05]", "~piggyback.schemes.linear", "mia.max_samples=200",
         "dispose.epochs=1", "dispose.methods=[rand]"]
ATTACKS = {"loss", "confidence", "entropy", "modified_entropy", "classifier"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("out")
    proc = submit("+exp=demo", f"out_root={out}", *FAST, *SMALL, data_root=data_root)
    return out, out / "demo", proc


def _plan(exp: Path) -> dict:
    return json.loads((exp / "plan.json").read_text())["stages"]


def _csv(exp: Path, table: str) -> list[dict]:
    with open(exp / "report" / f"{table}.csv") as f:
        return list(csv.DictReader(f))


def test_every_released_model_and_scratch_is_attacked(demo):
    _, exp, _ = demo
    plan, metrics = _plan(exp), stage_metrics(exp)
    released = [n for n, s in plan.items() if s["kind"] in ("transfer", "dispose")]
    pl = {n: m for n, m in metrics.items() if plan[n]["kind"] == "piggyback"}
    attacks = [m["attack_labels"] for m in pl.values()]
    assert {(a["attacks"], a["scheme"]) for a in attacks} == {(r, "finetune") for r in released + ["scratch"]}
    for m in pl.values():
        a = m["attack_labels"]
        assert m["status"] == "done" and a["task"] == "synth" and a["seed"] == 0 and a["fraction"] == 0.5
        assert m["model_labels"] == ({"method": "scratch"} if a["attacks"] == "scratch"
                                     else metrics[a["attacks"]]["model_labels"])
        assert len(m["grid"]) == 1 and m["grid"][0]["steps"] == [15, 30]  # grids: test_piggyback_stage.py
        assert m["acc_pl"]["best"] >= m["acc_pl"]["final"] == m["grid"][0]["curve"][-1]


def test_mia_attacks_models_with_a_source_head_and_skips_the_others(demo):
    _, exp, _ = demo
    metrics = stage_metrics(exp)
    tl = metrics["mia/transfer"]
    assert tl["status"] == "done" and set(tl["mia"]) == ATTACKS
    assert tl["members"] == tl["nonmembers"] == 200
    assert all(0 <= r["acc"] <= 1 and 0 <= r["auc"] <= 1 for r in tl["mia"].values())
    tgt = metrics["mia/tgt"]
    assert tgt["status"] == "done" and tgt["mia"] is None and "no source head" in tgt["skipped"]


def test_report_is_the_last_job_and_every_cell_is_traceable(demo):
    _, exp, proc = demo
    plan, metrics = _plan(exp), stage_metrics(exp)
    assert metrics["report"]["status"] == "done" and (exp / "report" / "report.md").exists()
    assert set(plan["report"]["inputs"]) == {n for n, s in plan.items() if s["kind"] in ("evaluate", "piggyback", "mia")}
    by_path = {str(Path(s["dir"]) / "metrics.json"): metrics[n] for n, s in plan.items()}
    checked = 0
    for table in ("table1", "worst_case", "honest", "table3", "piggyback", "mia"):
        for row in _csv(exp, table):
            if row["status"] != "ok":
                # Nothing failed in this run; with one epoch of pretraining TL may give an attacker no measurable
                # head start over scratch, which makes the disposal ratios undefined (tests/report has their math).
                assert row["status"] in ("n/a", "skipped", "undefined"), row
                continue
            sources = row["sources"].split(";")
            assert all(s in by_path and by_path[s]["status"] == "done" for s in sources), row
            if "(" not in row["field"] and " " not in row["field"]:  # a number read straight from the files
                values = [dig(by_path[s], row["field"]) for s in sources]
                assert float(row["value"]) == pytest.approx(sum(values) / len(values)), row
                checked += 1
    assert checked >= 10
    t1 = {(r["row"], r["column"]): r for r in _csv(exp, "table1")}
    for model, ratio in (("tl", 0.0), ("scratch", 1.0)):
        cell = t1[(model, "disposal ratio synth")]
        assert cell["status"] == "undefined" or float(cell["value"]) == ratio, cell
    t3 = {(r["row"], r["column"]): float(r["value"]) for r in _csv(exp, "table3") if r["value"]}
    assert float(t1[("tl", "ΔAcc_t vs TGT")]["value"]) == pytest.approx(t3[("tl", "Acc_t")] - t3[("tgt", "Acc_t")])
    assert {p.name for p in (exp / "report").glob("*.png")} == {"curves_synth_finetune.png", "lam_sweep_synth.png"}
    assert any(r["row"].startswith("rand ") and "lam=" in r["row"] for r in _csv(exp, "table1"))  # a disposed model


def test_console_without_a_terminal_says_each_state_change_and_ends_with_the_headline(demo):
    _, exp, proc = demo
    out = proc.stdout
    assert "\r" not in out  # no carriage-return bars where standard output is not a terminal
    lines = re.findall(r"^trd: \d\d:\d\d:\d\d (\S+): (\w+)(.*)$", out, re.M)
    # A stage running longer than the console's interval also gets progress lines ("step 5/15 · ...", "progress
    # unknown" before its first step): they are not state changes.
    progress = [(word, rest) for _, word, rest in lines if word in ("epoch", "point", "step", "progress") or " · " in rest]
    assert all(re.search(r"\bstep \d+/\d+|^progress unknown$", word + rest) for word, rest in progress), progress
    changes = [(name, word) for name, word, rest in lines if (word, rest) not in progress]
    plan = _plan(exp)
    assert {name for name, state in changes if state == "done"} == set(plan)
    for name in plan:  # each stage's states in the order they happened, ending done
        states = [state for n, state in changes if n == name]
        assert states[-1] == "done" and set(states) <= {"running", "done"}, (name, states)
    summary = out[out.index("trd: finished, "):]
    assert summary.startswith(f"trd: finished, {len(plan)} stages: {len(plan)} done")
    headline = summary.splitlines()[2:]
    assert headline[0] == "Headline: the worst-case attacker"
    assert re.match(r"\s+model\s+Acc_t\s+Acc_pl synth\s+disposal ratio synth$", headline[1]), headline[1]
    rows = {line.split()[0]: line.split()[1:] for line in headline[2:] if line.startswith("  ")}
    assert {"tl", "tgt", "scratch"} <= set(rows), headline
    assert rows["tl"][-1] in ("0.000", "undefined") and rows["scratch"][0] == "n/a"  # scratch has no Acc_t
    assert f"trd: report       {exp}/report/report.md" in summary
    assert f"tensorboard --logdir {exp}/stages" in summary
    # submitit's files of every job in one folder, no literal "%j" folder
    assert (exp / "jobs").is_dir() and any((exp / "jobs").glob("*_0_log.out"))
    assert not list(exp.rglob("%j"))


def test_failed_pl_job_is_reported_as_failed(demo, data_root):
    out, _, _ = demo
    # The piggyback data with num_classes=5: its labels 5..9 do not fit, found when the job reads the shards.
    bad = ("+data.piggyback.bad={train: '${data.root}/synth_piggyback/32px/train-{000000..000001}.tar', "
           "test: '${data.root}/synth_piggyback/32px/test-{000000..000001}.tar', num_classes: 5, image_size: 32}")
    proc = submit("+exp=demo", f"out_root={out}", "name=other", *FAST, *SMALL, bad,
                  "piggyback.tasks=[synth,bad]", data_root=data_root, check=False)
    assert proc.returncode == 1
    assert re.search(r"^trd: piggyback/transfer/bad/finetune/s0 failed: DataError: data.piggyback.bad", proc.stdout,
                     re.M), proc.stdout
    assert re.search(r"^trd: not run \(an input failed or the job was cancelled\): .*\breport\b", proc.stdout, re.M)
    assert re.search(r"^trd: to run only what is not done .*: python launch/submit.py \+exp=demo .*name=other",
                     proc.stdout, re.M), proc.stdout
    exp = out / "other"
    failed = stage_metrics_or_none(exp)["piggyback/transfer/bad/finetune/s0"]
    assert failed["status"] == "failed" and "\n" not in failed["error"]
    assert failed["error"].startswith("DataError: data.piggyback.bad: label ") and "outside [0, 5)" in failed["error"]

    report = subprocess.run([sys.executable, "launch/report.py", str(exp)], cwd=REPO, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    t1 = {(r["row"], r["column"]): r for r in _csv(exp, "table1")}
    assert t1[("tl", "ΔAcc_pl bad vs TL")]["text"] == "failed"
    assert failed["error"] in t1[("tl", "ΔAcc_pl bad vs TL")]["note"]
    assert t1[("tl", "ΔAcc_pl synth vs TL")]["status"] == "ok"  # the other task is unaffected
    assert "| piggyback/transfer/bad/finetune/s0 | failed | DataError: data.piggyback.bad" in report.stdout


def stage_metrics_or_none(exp: Path) -> dict:
    out = {}
    for name, s in _plan(exp).items():
        path = Path(s["dir"]) / "metrics.json"
        out[name] = json.loads(path.read_text()) if path.exists() else None
    return out
