"""A table cell: a number with its spread and the metrics.json files it came from, or why there is none.

Cells are built only by aggregating records or combining other cells, so a cell's sources always list every
metrics.json that went into it (including those of failed stages, which make the whole cell failed: a
failure is never averaged away or counted as 0%).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trd.report.records import Record

OK = "ok"
NOT_APPLICABLE = "n/a"
NOT_SATURATED = "attacker not saturated"
MARKS = {NOT_SATURATED: " †"}
# Worst first: a cell combining several stages shows the worst of their states.
UNDEFINED = "undefined"
STATUS_ORDER = ("failed", "diverged", "running", "pending", "skipped", UNDEFINED, NOT_APPLICABLE, OK)


def worst(statuses: Iterable[str]) -> str:
    return min(statuses, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 0, default=OK)


@dataclass(frozen=True)
class Cell:
    value: float | None = None
    std: float | None = None  # sample standard deviation over seeds (n > 1), else None
    n: int = 0  # how many values (seeds) went into the mean
    status: str = OK
    field: str = ""  # what was read from each metrics.json, or how the number was combined
    sources: tuple[str, ...] = ()  # metrics.json paths
    note: str = ""  # why a cell has no number (the first error)
    unit: str = "acc"  # acc: an accuracy, in %; delta: a difference of accuracies, signed %; ratio, count: as is
    flags: tuple[str, ...] = ()  # caveats shown beside the number: NOT_SATURATED
    se: float | None = None  # standard error of the value from the test sets' sizes (binomial), where known

    def text(self, with_se: bool = True) -> str:
        if self.status != OK:
            return self.status
        if self.unit == "count":
            return f"{self.value:g}" if not self.std else f"{self.value:g} ± {self.std:.1f}"
        scale, digits = (1.0, 3) if self.unit == "ratio" else (100.0, 2)
        number = f"{self.value * scale:{'+' if self.unit == 'delta' else ''}.{digits}f}"
        if self.std is not None:
            number = f"{number} ± {self.std * scale:.{digits}f}"
        elif with_se and self.se is not None and self.unit in ("acc", "delta"):
            number = f"{number} (SE {self.se * scale:.{digits}f})"
        return number + "".join(MARKS[f] for f in self.flags)


def missing(note: str, unit: str = "acc") -> Cell:
    return Cell(status=NOT_APPLICABLE, note=note, unit=unit)


def dig(metrics: dict, path: str):
    """metrics["acc_pl"]["final"] for path "acc_pl.final"; None when any part is absent."""
    value = metrics
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _sources(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for group in groups for s in group))


def _unsaturated(record: Record) -> bool:
    return (record.metrics.get("saturation") or {}).get("saturated") is False


def binomial_se(accuracy: float, samples: int | None) -> float | None:
    """The standard error of an accuracy measured on `samples` test images: sqrt(p (1 - p) / n)."""
    if not samples:
        return None
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / samples)


def aggregate(records: list[Record], field: str, group: Callable[[Record], object] | None = None,
              unit: str = "acc", absent: str = "no such stage in this experiment", if_null: str | None = None,
              choose_by: str | None = None, samples: str | None = None) -> Cell:
    """Mean +- std over replicates of dig(metrics, field). With group, the records of one group (one model's
    attacks by several schemes and seeds) first reduce to one: the one with the highest `field`, or with the
    highest `choose_by` (a validation accuracy: what an attacker who never sees the test set picks). A finished
    stage without the number is if_null (e.g. n/a for a model without a source head); by default skipped when
    its metrics say it skipped, else diverged (a PL job whose fixed point diverged has acc_pl.final null). A
    number taken from an attack that did not saturate is flagged: it is a lower bound on that attacker. samples
    names the metrics field of the test set's size: the mean then carries its binomial standard error."""
    if not records:
        return missing(absent, unit)
    sources = _sources(r.metrics_path for r in records)
    bad = [r for r in records if not r.ok]
    if bad:
        return Cell(status=worst(r.status for r in bad), field=field, sources=sources, n=len(records), unit=unit,
                    note=next((f"{r.name}: {r.metrics['error']}" for r in bad if r.metrics.get("error")),
                              f"{bad[0].name}: {bad[0].status}"))
    values = [dig(r.metrics, field) for r in records]
    if any(v is None for v in values):
        # A finished stage without the number: its metrics say why (a diverged fixed point, a skipped model).
        r = records[[v is None for v in values].index(True)]
        status = if_null or ("skipped" if r.metrics.get("skipped") else "diverged")
        return Cell(status=status, field=field, sources=sources, n=len(records), unit=unit,
                    note=f"{r.name}: {r.metrics.get('skipped') or f'{field} is null'}")
    chosen = list(zip(records, values))
    if group is not None:
        by_group: dict[object, tuple[float, Record, float]] = {}
        for r, v in chosen:
            score = float(v) if choose_by is None else float(dig(r.metrics, choose_by) or -math.inf)
            key = group(r)
            if key not in by_group or score > by_group[key][0]:
                by_group[key] = (score, r, float(v))
        chosen = [(r, v) for _, r, v in by_group.values()]
        field = f"{field} of the attack with the highest {choose_by or field} per model"
    mean, std = mean_std([float(v) for _, v in chosen])
    if all(isinstance(v, bool) for _, v in chosen):
        std = None  # a share of yes/no answers: its spread says nothing more
    flags = (NOT_SATURATED,) if unit in ("acc", "delta") and any(_unsaturated(r) for r, _ in chosen) else ()
    errors = [binomial_se(float(v), dig(r.metrics, samples)) for r, v in chosen] if samples else [None]
    se = math.sqrt(sum(e * e for e in errors)) / len(errors) if all(e is not None for e in errors) else None
    return Cell(mean, std, len(chosen), OK, field, sources, unit=unit, flags=flags, se=se)


def _combined_failure(cells: list[Cell], field: str, unit: str) -> Cell | None:
    bad = [c for c in cells if c.status != OK]
    if not bad:
        return None
    return Cell(status=worst(c.status for c in bad), field=field, sources=_sources(*(c.sources for c in cells)),
                note=next((c.note for c in bad if c.note), ""), unit=unit)


def _flags(*cells: Cell) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for c in cells for f in c.flags))


def difference(x: Cell, ref: Cell) -> Cell:
    """x - ref of the means; the spread treats the two as independent: sqrt(std_x^2 + std_ref^2)."""
    field = f"({x.field}) - reference ({ref.field})"
    failed = _combined_failure([x, ref], field, "delta")
    if failed is not None:
        return failed
    if x.sources == ref.sources:  # a model against itself (TL's row vs TL): exactly zero, no spread
        return Cell(0.0, None, x.n, OK, field, x.sources, unit="delta", flags=x.flags)
    std = None if x.std is None and ref.std is None else math.hypot(x.std or 0.0, ref.std or 0.0)
    se = _hypot_se(x, ref)
    return Cell(x.value - ref.value, std, min(x.n, ref.n), OK, field, _sources(x.sources, ref.sources), unit="delta",
                flags=_flags(x, ref), se=se)


def _hypot_se(*cells: Cell) -> float | None:
    """The standard error of a difference of independent cells: from their spread over seeds where they have
    one (std / sqrt(n)), else from their test sets (binomial)."""
    parts = []
    for c in cells:
        part = c.std / math.sqrt(c.n) if c.std is not None and c.n > 1 else c.se
        if part is None:
            return None
        parts.append(part)
    return math.hypot(*parts)


def disposal_ratio(x: float, tl: float, scratch: float) -> float | None:
    """(Acc_pl(TL) - Acc_pl(X)) / (Acc_pl(TL) - Acc_pl(scratch)): 0 = gives an attacker all that TL gives,
    1 = gives nothing beyond a random initialisation; None when TL and scratch tie (no scale to measure on)."""
    gap = tl - scratch
    if abs(gap) < 1e-12:
        return None
    return (tl - x) / gap


def ratio_cell(x: Cell, tl: Cell, scratch: Cell, reference: str = "TL") -> Cell:
    field = f"disposal ratio ({reference} - X) / ({reference} - scratch) of the mean accuracies"
    failed = _combined_failure([x, tl, scratch], field, "ratio")
    if failed is not None:
        return failed
    sources = _sources(x.sources, tl.sources, scratch.sources)
    gap, gap_se = tl.value - scratch.value, _hypot_se(tl, scratch)
    if gap_se is not None and gap < 2 * gap_se:
        return Cell(status=UNDEFINED, field=field, sources=sources, unit="ratio",
                    note=f"Acc_pl({reference}) - Acc_pl(scratch) = {gap * 100:.2f} points is not clearly positive "
                         f"(less than twice its standard error, {gap_se * 100:.2f}): the released model gives an "
                         f"attacker no measurable head start over a random initialisation, so the ratio has no scale")
    value = disposal_ratio(x.value, tl.value, scratch.value)
    if value is None:
        return Cell(status=NOT_APPLICABLE, field=field, sources=sources, unit="ratio",
                    note=f"{reference} and scratch reach the same PL accuracy: the ratio has no scale")
    return Cell(value, None, min(x.n, tl.n, scratch.n), OK, field, sources, unit="ratio", flags=_flags(x, tl, scratch))
