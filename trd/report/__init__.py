"""Reports of an experiment, from its plan.json and its stages' metrics.json files alone.

    from trd.report import write_report
    write_report("outputs/demo")      # -> outputs/demo/report/{report.md, <table>.csv, *.png}
"""
from __future__ import annotations

from pathlib import Path

from trd.atomic import atomic_write
from trd.report.attacker_split import attacker_split_tables
from trd.report.plots import all_plots
from trd.report.records import load_records, report_settings
from trd.report.robust_tables import robust_tables
from trd.report.tables import Experiment, Table, all_tables
from trd.report.tables import headline as headline_table
from trd.report.write import problems_markdown, table_csv, table_markdown

REPORT_DIR = "report"


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


def _experiment(exp_dir: Path, paper_scheme: str | None = None, reference: str | None = None) -> tuple[Experiment, list]:
    records = load_records(exp_dir)
    settings = report_settings(exp_dir)
    ex = Experiment(records, paper_scheme or settings.get("paper_scheme"), reference or settings.get("reference", "tl"))
    return ex, records


def headline(exp_dir: str | Path) -> Table | None:
    """The headline table of an experiment (tables.headline), or None when it evaluated no model."""
    ex, _ = _experiment(Path(exp_dir).resolve())
    return headline_table(ex) if ex.of("evaluate") or ex.tasks else None


def write_report(exp_dir: str | Path, paper_scheme: str | None = None, reference: str | None = None) -> dict:
    """paper_scheme and reference default to the experiment's (piggyback.paper_scheme, report.reference)."""
    exp_dir = Path(exp_dir).resolve()
    ex, records = _experiment(exp_dir, paper_scheme, reference)
    if ex.paper_scheme is not None and ex.schemes and ex.paper_scheme not in ex.schemes:
        raise ValueError(f"paper scheme {ex.paper_scheme!r} was not run in {exp_dir}: use one of {', '.join(ex.schemes)}")
    out = exp_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    tables = all_tables(ex) + robust_tables(ex) + attacker_split_tables(ex, records)
    for table in tables:
        _write_text(out / f"{table.name}.csv", table_csv(table))
    plots = all_plots(ex, out)
    sections = [f"# Report: {exp_dir.name}", "",
                f"Experiment `{exp_dir}`; every number comes from a stage's metrics.json, named per cell in the "
                f"CSV file of its table (column `sources`). Accuracies in %, mean ± std over seeds where there "
                f"are several; `failed`, `diverged`, `pending`: a stage behind that cell did not finish; "
                f"`n/a`: not measured for that model.", ""]
    sections += [table_markdown(t) + f"\n[{t.name}.csv]({t.name}.csv)\n" for t in tables]
    if plots:
        sections += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    sections.append(problems_markdown([r for r in records if r.kind != "report"]))
    _write_text(out / "report.md", "\n".join(sections))
    cells = [c for t in tables for _, row in t.rows for c in row.values()]
    statuses: dict[str, int] = {}
    for c in cells:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    return {"dir": str(out), "markdown": str(out / "report.md"), "tables": [t.name for t in tables],
            "plots": [p.name for p in plots], "cells": statuses, "paper_scheme": ex.paper_scheme}
