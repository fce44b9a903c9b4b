"""The report's figures (PNG), drawn from the same cells as the tables; a figure whose data the experiment
does not have (no stage labelled lam, no task with a fraction) is not drawn.

* lam_sweep_<task>.png: Acc_pl against Acc_t over a lam sweep (the DTL paper's Fig. 6), one line per method.
* curves_<task>_<scheme>.png: test accuracy at every evaluation of the scheme's fixed point, per model, the
  band one std over its seeds (the transfer-resistant study's Fig. 2 with the mit scheme).
* data_amount.png: the worst-case Acc_pl against the attacker's data fraction (Fig. 5), per model.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trd.atomic import atomic_write
from trd.report.cells import OK, aggregate
from trd.report.records import SWEEP_LABEL, override_leaf, split_overrides, variant_name
from trd.report.tables import Experiment

# Variant names can be long: legends go under the axes, where they never hide the data.
LEGEND = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (0.0, -0.2), "frameon": False}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    return path


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def _line_name(labels: dict) -> str:
    """One line per variant up to lam: a sweep over lam and another setting draws one line per setting."""
    rest = {k: v for k, v in labels.items() if k not in ("lam", SWEEP_LABEL)}
    others = [o for o in split_overrides(labels.get(SWEEP_LABEL, "")) if not override_leaf(o).startswith("lam=")]
    if others:
        rest[SWEEP_LABEL] = ",".join(others)
    return variant_name(json.dumps(rest, sort_keys=True))


def lam_sweep(ex: Experiment, out: Path) -> list[Path]:
    swept = [v for v in ex.variants if "lam" in json.loads(v)]
    if not swept or ex.paper_scheme is None:
        return []
    paths = []
    for task in ex.tasks:
        fig = Figure(figsize=(5.5, 4.2))
        ax = fig.add_subplot()
        by_method: dict[str, list[tuple[float, float, float]]] = {}
        for v in swept:
            acc_t, acc_pl = ex.acc(v, "target"), ex.acc_pl(v, task)
            if acc_t.status == OK and acc_pl.status == OK:
                labels = json.loads(v)
                by_method.setdefault(_line_name(labels), []).append((labels["lam"], acc_t.value, acc_pl.value))
        for method, points in by_method.items():
            points.sort()
            ax.plot([p[1] * 100 for p in points], [p[2] * 100 for p in points], "o-", label=method)
            for lam, x, y in points:
                ax.annotate(f"λ={lam:g}", (x * 100, y * 100), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for ref, marker, name in (("ref", "*", ex.reference_method.upper()), ("tgt", "s", "TGT")):
            acc_t, acc_pl = ex.acc(ex.reference[ref], "target"), ex.acc_pl(ex.reference[ref], task)
            if acc_t.status == OK and acc_pl.status == OK:
                ax.plot([acc_t.value * 100], [acc_pl.value * 100], marker, markersize=10, label=name)
        scratch = ex.acc_pl(ex.reference["scratch"], task)
        if scratch.status == OK:
            ax.axhline(scratch.value * 100, color="grey", linestyle=":", label="scratch (PL)")
        if not by_method:
            continue
        ax.set(xlabel="target accuracy Acc_t (%)", ylabel=f"PL accuracy on {task} (%)",
               title=f"PL vs target accuracy over λ ({ex.paper_scheme})")
        ax.legend(**LEGEND)
        paths.append(_save(fig, out / f"lam_sweep_{_safe(task)}.png"))
    return paths


def learning_curves(ex: Experiment, out: Path) -> list[Path]:
    paths = []
    for task in ex.tasks:
        for scheme in ex.schemes:
            fig = Figure(figsize=(5.5, 4.2))
            ax = fig.add_subplot()
            drawn, lrs = 0, set()
            for v in ex.variants:
                records = [r for r in ex.of("piggyback", v, task=task, scheme=scheme) if r.ok]
                fixed = [r.metrics["grid"][0] for r in records if r.metrics["grid"][0]["status"] == "done"]
                if not fixed:
                    continue
                lrs.update(r.metrics["grid"][0]["lr"] for r in records)
                length = min(len(p["curve"]) for p in fixed)
                mean = [sum(p["curve"][e] for p in fixed) / len(fixed) * 100 for e in range(length)]
                steps = (fixed[0].get("steps") or list(range(1, length + 1)))[:length]
                line, = ax.plot(steps, mean, "o-", markersize=3, label=f"{variant_name(v)} (n={len(fixed)})")
                if len(fixed) > 1:
                    std = [statistics.stdev(p["curve"][e] * 100 for p in fixed) for e in range(length)]
                    ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                    color=line.get_color(), alpha=0.2, linewidth=0)
                drawn += 1
            if not drawn:
                continue
            ax.set(xlabel="optimiser step", ylabel="test accuracy (%)",
                   title=f"PL learning curves: {task}, {scheme} (lr={', '.join(f'{lr:g}' for lr in sorted(lrs))})")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(**LEGEND)
            paths.append(_save(fig, out / f"curves_{_safe(task)}_{_safe(scheme)}.png"))
    return paths


def data_amount_plot(ex: Experiment, out: Path) -> list[Path]:
    """Per model, the worst-case attacker's accuracy against its data fraction, one line per task of fractions."""
    fractions = sorted({r.label("fraction") for r in ex.of("piggyback") if r.label("fraction") is not None})
    if len(fractions) < 2:
        return []
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot()
    for v in ex.variants:
        points = []
        for fraction in fractions:
            records = [r for r in ex.of("piggyback", v) if r.label("fraction") == fraction]
            cell = aggregate(records, "acc_pl.best", group=lambda r: r.instance or r.label("attacks"))
            if cell.status == OK:
                points.append((fraction, cell.value * 100))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=variant_name(v))
    ax.set(xscale="log", xlabel="attacker's data: fraction of the task's train split",
           ylabel="worst-case PL accuracy (%)", title="What each released model gives away, by data amount")
    ax.legend(**LEGEND)
    return [_save(fig, out / "data_amount.png")]


def asr_plot(ex: Experiment, out: Path) -> list[Path]:
    """Renofeation's trade-off: per model, the target-agnostic attack's success rate against clean accuracy."""
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot()
    drawn = 0
    for v in ex.variants:
        records = ex.of("agnostic", v)
        clean, asr = aggregate(records, "clean"), aggregate(records, "asr")
        if records and clean.status == OK and asr.status == OK:
            ax.errorbar(clean.value * 100, asr.value * 100, xerr=(clean.std or 0) * 100, yerr=(asr.std or 0) * 100,
                        fmt="o", capsize=3, label=variant_name(v))
            drawn += 1
    if not drawn:
        return []
    ax.set(xlabel="clean accuracy (%)", ylabel="attack success rate (%)",
           title="Target-agnostic attack: success rate against clean accuracy")
    ax.legend(**LEGEND)
    return [_save(fig, out / "asr_vs_clean.png")]


def all_plots(ex: Experiment, out: Path) -> list[Path]:
    return lam_sweep(ex, out) + learning_curves(ex, out) + data_amount_plot(ex, out) + asr_plot(ex, out)
