"""Tables to markdown (for people) and CSV (for tracing: one line per cell with the metrics.json it came from)."""
from __future__ import annotations

import csv
import io
import textwrap

from trd.report.cells import UNDEFINED
from trd.report.records import Record
from trd.report.tables import Table

CSV_COLUMNS = ("row", "column", "text", "value", "std", "n", "status", "unit", "field", "sources", "note")


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    lines = [f"## {table.title}", ""]
    if table.caption:
        lines += [table.caption, ""]
    lines.append("| " + " | ".join(["model", *map(_md_escape, table.columns)]) + " |")
    lines.append("|" + "---|" * (len(table.columns) + 1))
    for row, cells in table.rows:
        lines.append("| " + " | ".join([_md_escape(row), *(_md_escape(cells[c].text()) for c in table.columns)]) + " |")
    undefined = dict.fromkeys(f"{row}, {c}: {cells[c].note}" for row, cells in table.rows for c in table.columns
                              if cells[c].status == UNDEFINED)
    if undefined:
        lines += ["", "Undefined cells:"] + [f"- {_md_escape(note)}" for note in undefined]
    return "\n".join(lines) + "\n"


def table_text(table: Table, max_row: int = 40) -> str:
    """Plain aligned columns for a console: values without their standard errors, long row names cut."""
    rows = [[row if len(row) <= max_row else row[:max_row - 1] + "…", *(cells[c].text(with_se=False)
                                                                        for c in table.columns)]
            for row, cells in table.rows]
    header = ["model", *table.columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{table.title}"]
    for r in [header, *rows]:
        lines.append("  " + "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    if table.caption:
        lines.append(textwrap.fill(table.caption, width=110))
    return "\n".join(lines)


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row, cells in table.rows:
        for column in table.columns:
            c = cells[column]
            writer.writerow([row, column, c.text(), "" if c.value is None else repr(c.value),
                             "" if c.std is None else repr(c.std), c.n, c.status, c.unit, c.field,
                             ";".join(c.sources), c.note])
    return out.getvalue()


def problems_markdown(records: list[Record]) -> str:
    """Every stage that did not finish, with its error and log: a failure is never dropped from a report."""
    bad = [r for r in records if not r.ok]
    if not bad:
        return "## Stages\n\nEvery stage finished.\n"
    lines = ["## Stages that did not finish", "", "| stage | status | error | log |", "|---|---|---|---|"]
    for r in bad:
        lines.append("| " + " | ".join(_md_escape(v) for v in (r.name, r.status, r.metrics.get("error") or "",
                                                                  r.metrics.get("log") or str(r.dir))) + " |")
    return "\n".join(lines) + "\n"
