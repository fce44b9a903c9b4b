"""The report's tables, built from records alone (see cells.py for what a cell is).

* table1: the DTL paper's Table 1 layout: per model variant, dAcc_t vs TGT, dAcc_t vs TL and, per piggyback
  task, dAcc_pl vs TL and the disposal ratio, all with the paper scheme's acc_pl.final; a Reference row holds
  the absolute accuracies the differences are taken from.
* worst_case: the same for the best-of-grid attacker: per model the best acc_pl.best over all schemes and seeds.
* honest: the same for the attacker that selects on its own validation slice (acc_pl.selected).
* table3: the paper's Table 3 layout: Acc_s, Acc_t and Acc_pl (paper scheme, best-of-grid) per task.
* piggyback: every (variant, task, scheme): acc_pl.final and acc_pl.best.
* mia: attack accuracy and AUC per membership-inference attack.
Means +- std are over the replicates of a variant: PL seeds and models that differ only in seeds (records.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from trd.report.cells import Cell, aggregate, difference, missing, ratio_cell
from trd.report.records import Record, variant_name


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, dict[str, Cell]]] = field(default_factory=list)
    caption: str = ""

    def add(self, row: str, cells: dict[str, Cell]) -> None:
        self.rows.append((row, {c: cells.get(c, missing("not measured")) for c in self.columns}))


class Experiment:
    """Records indexed the way the tables ask for them."""

    def __init__(self, records: list[Record], paper_scheme: str | None, reference: str = "tl"):
        self.records = [r for r in records if r.reported]
        piggyback = self.of("piggyback")
        self.tasks = list(dict.fromkeys(r.label("task") for r in piggyback))
        self.schemes = list(dict.fromkeys(r.label("scheme") for r in piggyback))
        if paper_scheme is None and len(self.schemes) == 1:
            paper_scheme = self.schemes[0]
        self.paper_scheme = paper_scheme
        found = list(dict.fromkeys(r.variant for r in self.records))
        method = {v: json.loads(v).get("method") for v in found}
        self.reference_method = reference
        references = (reference, "tgt", "scratch")
        order = {m: i for i, m in enumerate(references)}
        # References first (TL, TGT), scratch last, the rest in plan order between them.
        self.variants = sorted(found, key=lambda v: (0 if method[v] in references[:2] else 2 if method[v] == "scratch"
                                                     else 1, order.get(method[v], 0)))
        self.reference = {role: next((v for v in self.variants if method[v] == m), None)
                          for role, m in zip(("ref", "tgt", "scratch"), references)}

    def of(self, kind: str, variant: str | None = None, **labels) -> list[Record]:
        return [r for r in self.records if r.kind == kind and (variant is None or r.variant == variant)
                and all(r.label(k) == v for k, v in labels.items())]

    def acc(self, variant: str | None, role: str) -> Cell:
        if variant is None:
            return missing("no such model in this experiment")
        # Only models with a source head have acc.source; the target head is always measured.
        return aggregate(self.of("evaluate", variant), f"acc.{role}", if_null="n/a" if role == "source" else None,
                         absent=f"{variant_name(variant)} has no evaluate stage", samples=f"test_samples.{role}")

    def acc_pl(self, variant: str | None, task: str) -> Cell:
        """The paper scheme's acc_pl.final."""
        if variant is None:
            return missing("no such model in this experiment")
        if self.paper_scheme is None:
            return missing("no paper scheme named: pass --paper-scheme")
        return aggregate(self.of("piggyback", variant, task=task, scheme=self.paper_scheme), "acc_pl.final",
                         samples="test_samples", absent=f"{variant_name(variant)} was not attacked on {task} with {self.paper_scheme}")

    def acc_pl_best(self, variant: str | None, task: str) -> Cell:
        """The worst case: per attacked model the best acc_pl.best over every scheme and attacker seed (the oracle
        attacker at its luckiest), then the mean over the model's replicates."""
        if variant is None:
            return missing("no such model in this experiment")
        return aggregate(self.of("piggyback", variant, task=task), "acc_pl.best", samples="test_samples",
                         group=lambda r: r.instance or r.label("attacks"),
                         absent=f"{variant_name(variant)} was not attacked on {task}")

    def acc_pl_honest(self, variant: str | None, task: str) -> Cell:
        """The honest attacker: per attacked model, the scheme, seed, point and step with the highest accuracy on
        its own validation slice, and that choice's test accuracy; then the mean over the model's replicates."""
        if variant is None:
            return missing("no such model in this experiment")
        return aggregate(self.of("piggyback", variant, task=task), "acc_pl.selected",
                         group=lambda r: r.instance or r.label("attacks"), choose_by="selected_point.val_acc",
                         samples="test_samples",
                         if_null="n/a", absent=f"{variant_name(variant)} was not attacked on {task}")


def _disposal_table(ex: Experiment, name: str, title: str, pl, caption: str) -> Table:
    ref, tgt, scratch = (ex.reference[m] for m in ("ref", "tgt", "scratch"))
    r = ex.reference_method.upper()
    tgt = tgt if r != "TGT" else None  # its own column when it is not the reference
    columns = (["ΔAcc_t vs TGT"] if tgt else []) + [f"ΔAcc_t vs {r}"]
    for task in ex.tasks:
        columns += [f"ΔAcc_pl {task} vs {r}", f"disposal ratio {task}"]
    table = Table(name, title, columns, caption=caption)
    for variant in ex.variants:
        acc_t = ex.acc(variant, "target")
        cells = {f"ΔAcc_t vs {r}": difference(acc_t, ex.acc(ref, "target")) if acc_t.status != "n/a" else acc_t}
        if tgt:
            cells["ΔAcc_t vs TGT"] = difference(acc_t, ex.acc(tgt, "target")) if acc_t.status != "n/a" else acc_t
        for task in ex.tasks:
            x = pl(variant, task)
            cells[f"ΔAcc_pl {task} vs {r}"] = difference(x, pl(ref, task)) if x.status != "n/a" else x
            cells[f"disposal ratio {task}"] = ratio_cell(x, pl(ref, task), pl(scratch, task), r)
        table.add(variant_name(variant), cells)
    reference = {f"ΔAcc_t vs {r}": ex.acc(ref, "target")}
    if tgt:
        reference["ΔAcc_t vs TGT"] = ex.acc(tgt, "target")
    for task in ex.tasks:
        reference[f"ΔAcc_pl {task} vs {r}"] = pl(ref, task)
        reference[f"disposal ratio {task}"] = pl(scratch, task)
    shown = ("Acc_t TGT, " if tgt else "") + f"Acc_t {r}, Acc_pl {r}, Acc_pl scratch"
    table.add(f"Reference (absolute: {shown})", reference)
    return table


def table1(ex: Experiment) -> Table:
    return _disposal_table(
        ex, "table1", "Table 1: disposal (paper scheme)", ex.acc_pl,
        f"Differences in percentage points against the references; Acc_pl is the final-epoch accuracy of the "
        f"paper scheme `{ex.paper_scheme}` at its fixed learning rate. Disposal ratio = (Acc_pl(R) - Acc_pl(X)) / "
        f"(Acc_pl(R) - Acc_pl(scratch)) with R = {ex.reference_method.upper()}: 0 gives an attacker what R gives, 1 "
        f"nothing beyond a random init.")


SATURATION_NOTE = ("† attacker not saturated: its best point sits at the edge of its grid or of its budget after "
                   "every extension it was allowed, so the number is a lower bound on that attacker.")


def worst_case(ex: Experiment) -> Table:
    return _disposal_table(
        ex, "worst_case", "Worst case: best-of-grid attacker", ex.acc_pl_best,
        "As Table 1, with Acc_pl the attacker's best test accuracy over every scheme, grid point, evaluation and "
        f"attacker seed (schemes: {', '.join(ex.schemes)}): selected on the test set, an upper bound on these "
        f"attackers. The disposal ratio of this table is the one trd judges a defence by. {SATURATION_NOTE}")


def honest(ex: Experiment) -> Table:
    return _disposal_table(
        ex, "honest", "Honest attacker: selection on its own validation slice", ex.acc_pl_honest,
        "As the worst case, but the attacker chooses scheme, seed, grid point and stopping step by its accuracy on a "
        "validation slice of its own data (piggyback.val_fraction), never the test set: what a free-rider would "
        f"actually get. n/a: no validation slice (val_fraction 0). {SATURATION_NOTE}")


def headline(ex: Experiment) -> Table:
    """The experiment's answer in one table, printed when a run ends: per model its target accuracy, what the
    best-of-grid attacker gets from it on each task, and the disposal ratio against that attacker."""
    ref, scratch = ex.reference["ref"], ex.reference["scratch"]
    columns = ["Acc_t"] + [c for task in ex.tasks for c in (f"Acc_pl {task}", f"disposal ratio {task}")]
    if not ex.tasks:  # nothing was attacked: the models' target accuracy is all there is to say
        table = Table("headline", "Headline: target accuracy", columns)
    else:
        table = Table("headline", "Headline: the worst-case attacker", columns,
                      caption=f"Acc_pl: best-of-grid piggyback accuracy; disposal ratio against it, 0 = as useful to "
                              f"a free-rider as {ex.reference_method.upper()}, 1 = no more than a random init. "
                              f"{SATURATION_NOTE}")
    for variant in ex.variants:
        cells = {"Acc_t": ex.acc(variant, "target")}
        for task in ex.tasks:
            x = ex.acc_pl_best(variant, task)
            cells[f"Acc_pl {task}"] = x
            cells[f"disposal ratio {task}"] = ratio_cell(x, ex.acc_pl_best(ref, task), ex.acc_pl_best(scratch, task),
                                                         ex.reference_method.upper())
        table.add(variant_name(variant), cells)
    return table


def table3(ex: Experiment) -> Table:
    columns = ["Acc_s", "Acc_t"]
    for task in ex.tasks:
        columns += [f"Acc_pl {task}", f"Acc_pl {task} best-of-grid", f"Acc_pl {task} honest"]
    table = Table("table3", "Table 3: source, target and piggyback accuracy", columns,
                  caption="Acc_s through the private source head (models that have one), Acc_t through the "
                          "released target head, Acc_pl as in Table 1 and the worst case.")
    for variant in ex.variants:
        cells = {"Acc_s": ex.acc(variant, "source"), "Acc_t": ex.acc(variant, "target")}
        for task in ex.tasks:
            cells[f"Acc_pl {task}"] = ex.acc_pl(variant, task)
            cells[f"Acc_pl {task} best-of-grid"] = ex.acc_pl_best(variant, task)
            cells[f"Acc_pl {task} honest"] = ex.acc_pl_honest(variant, task)
        table.add(variant_name(variant), cells)
    return table


def piggyback_table(ex: Experiment) -> Table:
    table = Table("piggyback", "Piggyback attacks by scheme", ["final", "best", "honest", "saturated", "points",
                                                               "budget"],
                  caption="final: the fixed setting (the scheme's first values) at the end of its budget; best: the "
                          "best evaluation of the scheme's grid on the test set; honest: the test accuracy where the "
                          "validation accuracy is best; saturated: the share of the attacks (seeds) whose grid "
                          "saturated; points: grid points run (extensions included); budget: optimiser steps of the "
                          f"fixed setting. Means over seeds. {SATURATION_NOTE}")
    for variant in ex.variants:
        for task in ex.tasks:
            for scheme in ex.schemes:
                records = ex.of("piggyback", variant, task=task, scheme=scheme)
                if records:
                    table.add(f"{variant_name(variant)} · {task} · {scheme}", {
                        "final": aggregate(records, "acc_pl.final"), "best": aggregate(records, "acc_pl.best"),
                        "honest": aggregate(records, "acc_pl.selected", if_null="n/a"),
                        "saturated": aggregate(records, "saturation.saturated", unit="ratio", if_null="n/a"),
                        "points": aggregate(records, "grid_points", unit="count", if_null="n/a"),
                        "budget": aggregate(records, "budget", unit="count", if_null="n/a")})
    return table


def mia_table(ex: Experiment) -> Table:
    attacks = list(dict.fromkeys(a for r in ex.of("mia") if r.ok and r.metrics.get("mia")
                                 for a in r.metrics["mia"]))
    columns = [f"{a} {m}" for a in attacks for m in ("acc", "auc")] or ["attacks"]
    table = Table("mia", "Membership inference on the source training data", columns,
                  caption="Held-out balanced attack accuracy (%) and AUC; 50% / 0.5 is chance. Models without a "
                          "source head are skipped.")
    for variant in ex.variants:
        records = ex.of("mia", variant)
        if not records:
            continue
        cells = {}
        for a in attacks:
            cells[f"{a} acc"] = aggregate(records, f"mia.{a}.acc")
            cells[f"{a} auc"] = aggregate(records, f"mia.{a}.auc", unit="ratio")
        if not attacks:
            cells["attacks"] = aggregate(records, "mia")
        table.add(variant_name(variant), cells)
    return table


def all_tables(ex: Experiment) -> list[Table]:
    tables = [table1(ex), worst_case(ex), honest(ex), table3(ex)] if ex.of("evaluate") or ex.tasks else []
    if ex.tasks:
        tables.append(piggyback_table(ex))
    if ex.of("mia"):
        tables.append(mia_table(ex))
    return tables


__all__ = ["Experiment", "Table", "all_tables", "headline", "honest", "mia_table", "piggyback_table", "table1", "table3",
           "worst_case"]
