"""Arrows point one way: plan-time code and the report never import a stage kind (kinds are handed to the
planner; the report reads plan.json and metrics.json)."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["trd.plan", "trd.config", "trd.config.nodes", "trd.report", "trd.status",
                                    "trd.contract", "trd.metrics"])
def test_plan_time_code_and_the_report_import_no_stage_kind(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('trd.stages')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_built_in_kind_is_found_without_a_list():
    from trd.stages import discover

    kinds = discover()
    assert set(kinds) >= {"pretrain", "transfer", "dispose", "evaluate", "piggyback", "mia", "report"}
    assert all(name == kind.name for name, kind in kinds.items())
