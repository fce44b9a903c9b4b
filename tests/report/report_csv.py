"""A written report table's cells, keyed by (row, column), for the report tests."""
from __future__ import annotations

import csv
from pathlib import Path


def table_cells(exp: Path, table: str) -> dict[tuple[str, str], dict]:
    with open(exp / "report" / f"{table}.csv") as f:
        return {(r["row"], r["column"]): r for r in csv.DictReader(f)}
