#!/usr/bin/env python
"""How much an attacker preset gets out of each released model of the demo, and what it costs.

Runs the demo pipeline (`launch/submit.py +exp=demo`, its pretrain, transfer and disposal stages reused under
one out_root) once per attacker and prints, per attacker and released model, the best-of-grid (oracle) and the
honest Acc_pl of each scheme, whether each attack saturated, the grid points and optimiser steps it ran and its
wall time, and the worst-case disposal ratio of every disposed model.

    python bench/attacker_presets.py --out /tmp/attackers                 # before (the demo's old attacker)
                                                                          # and after (attack=demo)
    python bench/attacker_presets.py --out /tmp/attackers --task-fraction 1.0   # on all 600 images
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The demo's attacker before the saturating one (as it was in configs/exp/demo.yaml): fine-tuning for 3 epochs at
# two learning rates and a 3-epoch linear probe, no search, no validation slice.
BEFORE = [
    "piggyback.val_fraction=0", "~piggyback.schemes.finetune", "~piggyback.schemes.linear",
    "+piggyback.schemes.finetune={mode: full, k: null, epochs: 3, evals: 3, batch_size: 32, augment: true, "
    "checkpoint_every: 0, extend: null, optim: {name: sgd, lr: [0.01, 0.05], momentum: 0.9, weight_decay: 5.0e-4, "
    "schedule: cosine}}",
    "+piggyback.schemes.linear={mode: linear, k: null, epochs: 3, evals: 3, batch_size: 32, augment: false, "
    "checkpoint_every: 0, extend: null, optim: {name: sgd, lr: [0.1], momentum: 0.9, weight_decay: 0.0, "
    "schedule: cosine}}",
]
ATTACKERS = {"before": BEFORE, "after": []}


def run(out: Path, name: str, overrides: list[str], fraction: float) -> Path:
    subprocess.run([sys.executable, "launch/submit.py", "+exp=demo", f"out_root={out}", f"name={name}",
                    f"data.piggyback.synth.fraction={fraction}", *overrides], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return out / name


def rows(exp: Path) -> list[dict]:
    plan = json.loads((exp / "plan.json").read_text())["stages"]
    out = []
    for name, stage in plan.items():
        if stage["kind"] != "piggyback":
            continue
        m = json.loads((Path(stage["dir"]) / "metrics.json").read_text())
        steps = sum(p["steps"][-1] for p in m["grid"] if p["steps"])
        out.append({"model": stage["model_labels"]["method"], "scheme": stage["attack_labels"]["scheme"],
                    "best": m["acc_pl"]["best"], "honest": m["acc_pl"].get("selected"),
                    "saturated": m["saturation"]["saturated"], "points": m["grid_points"], "steps": steps,
                    "seconds": m["timings"]["stage_seconds"]})
    return out


def ratios(exp: Path) -> dict[str, str]:
    """The worst-case table's disposal ratios, as the report writes them."""
    import csv

    with open(exp / "report" / "worst_case.csv") as f:
        return {r["row"]: r["text"] for r in csv.DictReader(f) if r["column"].startswith("disposal ratio")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--task-fraction", type=float, default=0.2, help="the attacker's share of its task")
    args = parser.parse_args()
    print("| attacker | model | scheme | best-of-grid | honest | saturated | points | steps | stage s |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|")
    for attacker, overrides in ATTACKERS.items():
        exp = run(args.out, f"{attacker}-{args.task_fraction:g}", overrides, args.task_fraction)
        for r in sorted(rows(exp), key=lambda r: (r["model"], r["scheme"])):
            honest = "-" if r["honest"] is None else f"{100 * r['honest']:.1f}"
            print(f"| {attacker} | {r['model']} | {r['scheme']} | {100 * r['best']:.1f} | {honest} | "
                  f"{'yes' if r['saturated'] else 'no'} | {r['points']} | {r['steps']} | {r['seconds']:.0f} |")
        print(f"| {attacker} | disposal ratios (worst case) | {json.dumps(ratios(exp))} | | | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
