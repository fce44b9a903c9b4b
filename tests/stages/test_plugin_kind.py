"""A stage kind added from outside trd: one module in a package of its own (registered under the entry-point
group trd.stages), one config group and one experiment file, with no edit to any file of trd. It is planned,
run by the local launcher and evaluated like a built-in kind's released model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

KIND_MODULE = '''
"""toy: releases a randomly initialised model scaled by a factor (a stand-in for a method family)."""
from dataclasses import dataclass

import torch

from trd.config import parse
from trd.config.nodes import common_config, model_config
from trd.config.schema import knob, positive
from trd.data.role_config import role_config
from trd.models.registry import build_from_config
from trd.plan import StageKind


@dataclass
class ToyConfig:
    scale: float = knob(rule=positive())


def plan(cfg, plan):
    toy = parse(cfg["toy"], ToyConfig, "toy")
    target = role_config(cfg, "target")
    model, _ = model_config(cfg, target["image_size"])
    plan.add("toy", "toy", {**common_config(cfg), "model": model, "target": target, "scale": toy.scale},
             model={"method": "toy", "scale": toy.scale})


def run(ctx):
    c = ctx.config
    torch.manual_seed(c["seed"])
    model = build_from_config(c["model"], c["target"]["num_classes"], c["target"]["image_size"])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(c["scale"])
    ctx.save_released(model)
    return {"scaled_by": c["scale"]}


KIND = StageKind("toy", plan, run, releases_models=True, schema=ToyConfig)
'''


@pytest.fixture
def plugin(tmp_path) -> Path:
    root = tmp_path / "plugin"
    (root / "trd_toy_kind").mkdir(parents=True)
    (root / "trd_toy_kind" / "__init__.py").write_text(KIND_MODULE)
    info = root / "trd_toy_kind-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: trd-toy-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[trd.stages]\ntoy = trd_toy_kind:KIND\n")
    (root / "configs" / "toy").mkdir(parents=True)
    (root / "configs" / "toy" / "default.yaml").write_text("scale: 0.5\n")
    (root / "configs" / "exp").mkdir()
    (root / "configs" / "exp" / "toy_demo.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - /toy: default
        name: toy
        stages: [toy, evaluate]
        """))
    return root


@pytest.mark.slow
def test_a_kind_from_its_own_package_is_planned_run_and_evaluated(plugin, tmp_path, data_root):
    env = {**os.environ, "PYTHONPATH": str(plugin), "TRD_DATA": data_root}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "launch/submit.py", f"hydra.searchpath=[file://{plugin}/configs]",
                           "+exp=toy_demo", "toy.scale=2.0", f"out_root={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = json.loads((out / "toy" / "plan.json").read_text())["stages"]
    assert set(plan) == {"toy", "evaluate/toy"}
    assert plan["toy"]["releases_models"] and plan["toy"]["model_labels"] == {"method": "toy", "scale": 2.0}
    toy = json.loads((Path(plan["toy"]["dir"]) / "metrics.json").read_text())
    assert toy["status"] == "done" and toy["scaled_by"] == 2.0
    evaluated = json.loads((Path(plan["evaluate/toy"]["dir"]) / "metrics.json").read_text())
    assert evaluated["status"] == "done" and 0 <= evaluated["acc"]["target"] <= 1
    # Its schema is checked at submission like a built-in kind's.
    bad = subprocess.run([sys.executable, "launch/submit.py", f"hydra.searchpath=[file://{plugin}/configs]",
                          "+exp=toy_demo", "toy.scale=0", f"out_root={tmp_path / 'bad'}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "trd: error: toy.scale=0 is out of range: it must be > 0" in bad.stderr
    assert not (tmp_path / "bad").exists()
