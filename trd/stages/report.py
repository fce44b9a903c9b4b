"""report: the experiment's tables and figures, written into <experiment dir>/report/ as its last job.

It depends (afterok) on every stage whose kind reports read (evaluations, attacks), so it runs once all of them
finished; when one failed it does not run, and `python launch/report.py <experiment dir>` writes the report by
hand, showing the failed stages as failed. Planned once per experiment, over every point of a sweep. The
experiment dir is part of its config: stage dirs are shared between experiments, each experiment has its own
report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trd.config import ConfigError, parse, plain
from trd.plan import StageKind


@dataclass
class ReportConfig:
    reference: str = "tl"  # the method whose row the differences and the disposal ratio are taken against


def plan(cfg, plan) -> None:
    report = parse(cfg.get("report"), ReportConfig, "report")
    reported = plan.reported()
    if not reported:
        kinds = sorted(name for name, kind in plan.kinds.items() if kind.reported)
        raise ConfigError(f"stage report has nothing to report: put some of {', '.join(kinds)} before it in stages")
    methods = {s.model.get("method") for s in reported}
    if report.reference not in methods:
        raise ConfigError(f"report.reference={report.reference!r} names no model of this plan: use one of "
                          f"{', '.join(sorted(m for m in methods if m))}")
    exp_dir = Path(str(cfg["out_root"])).resolve() / str(cfg["name"])
    paper = cfg["piggyback"].get("paper_scheme") if cfg.get("piggyback") else None
    settings = {"paper_scheme": paper, **plain(report)}
    plan.settings["report"] = settings
    plan.add("report", "report", {"exp_dir": str(exp_dir), **settings}, inputs={s.name: s.name for s in reported})


def run(ctx) -> dict:
    from trd.report import (
        write_report,  # matplotlib: imported by the report job only, not by every stage job
    )

    if not ctx.env.is_main:
        return {}
    return {"report": write_report(ctx.config["exp_dir"])}


KIND = StageKind("report", plan, run, per_experiment=True, inputs=("*",), schema=ReportConfig)
