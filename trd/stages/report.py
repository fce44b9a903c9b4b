"""report: the experiment's tables and figures, written into <experiment dir>/report/ as its last job.

It depends (afterok) on every evaluate, piggyback and mia stage of the plan, so it only runs once all of them
finished; when one failed it does not run, and `python launch/report.py <experiment dir>` writes the report
by hand, showing the failed stages as failed. The experiment dir is part of its config: stage dirs are shared
between experiments, but each experiment gets its own report.
"""
from __future__ import annotations

from pathlib import Path

from trd.plan import ConfigError, planner
from trd.stages.base import stage

REPORTED_KINDS = ("evaluate", "piggyback", "mia")


@planner("report")
def plan_report(cfg, plan) -> None:
    reported = plan.of_kind(*REPORTED_KINDS)
    if not reported:
        raise ConfigError(f"stage report has nothing to report: put some of {', '.join(REPORTED_KINDS)} before it "
                          f"in stages")
    exp_dir = Path(str(cfg["out_root"])).resolve() / str(cfg["name"])
    paper = cfg["piggyback"].get("paper_scheme") if "piggyback" in cfg else None
    plan.add("report", "report", {"exp_dir": str(exp_dir)}, inputs={s.name: s.name for s in reported},
             labels={"paper_scheme": paper} if paper else {})


def merge_reports(plan) -> None:
    """Each point of a sweep planned a report over its own stages; a merged plan gets one report over all of
    them. Otherwise each point's report job would write the experiment's report once its own point is done,
    and the last writer could be one that ran while other points' attacks were still pending."""
    reports = plan.of_kind("report")
    if len(reports) < 2:
        return
    for spec in reports:
        del plan.stages[spec.name]
    first = reports[0]
    plan.add("report", "report", first.config, inputs={s.name: s.name for s in plan.of_kind(*REPORTED_KINDS)},
             labels=first.labels)


@stage("report")
def run_report(ctx) -> dict:
    from trd.report import write_report  # matplotlib: imported by the report job only, not by every stage job

    if not ctx.env.is_main:
        return {}
    return {"report": write_report(ctx.config["exp_dir"])}
