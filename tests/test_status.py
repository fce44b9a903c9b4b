"""launch/status.py reads plan.json and each stage's metrics.json; an experiment planned by an older trd (plan
format 1) still shows its stages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_status_of_an_experiment_planned_before_the_plug_in_stage_kinds(tmp_path):
    done, failed = tmp_path / "stages" / "pretrain-1", tmp_path / "stages" / "transfer-2"
    for d in (done, failed):
        d.mkdir(parents=True)
    (done / "metrics.json").write_text(json.dumps({"status": "done", "acc": {"source": 0.5}, "method": "pretrain"}))
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "ValueError: boom", "log": "x.err"}))
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "plan.json").write_text(json.dumps({"stages": {  # format 1: labels, no lineage
        "pretrain": {"kind": "pretrain", "hash": "1", "dir": str(done), "labels": {"method": "pretrain"}, "inputs": {}},
        "transfer": {"kind": "transfer", "hash": "2", "dir": str(failed), "labels": {"method": "tl"},
                     "inputs": {"pretrained": "pretrain"}},
        "tgt": {"kind": "transfer", "hash": "3", "dir": str(tmp_path / "stages" / "transfer-3"), "labels": {},
                "inputs": {}}}}))
    proc = subprocess.run([sys.executable, "launch/status.py", str(exp)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1  # a stage failed
    lines = proc.stdout.splitlines()
    assert any(line.split()[:3] == ["pretrain", "done", "source=0.5000"] for line in lines)
    assert any(line.split()[:2] == ["transfer", "failed"] for line in lines) and "ValueError: boom" in proc.stdout
    assert any(line.split()[:2] == ["tgt", "pending"] for line in lines)
