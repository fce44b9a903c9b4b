"""An experiment's state, read from its plan.json and each stage's metrics.json / job.json."""
from __future__ import annotations

from pathlib import Path

from trd.engine.atomic import read_json
from trd.metrics import read_metrics


def stage_rows(exp_dir: str | Path) -> list[dict]:
    plan = read_json(Path(exp_dir) / "plan.json")
    if plan is None:
        raise FileNotFoundError(f"{exp_dir} has no plan.json: is it an experiment directory of launch/submit.py?")
    rows = []
    for name, stage in plan["stages"].items():
        metrics = read_metrics(stage["dir"])
        job = read_json(Path(stage["dir"]) / "job.json", default={})
        rows.append({
            "stage": name, "kind": stage["kind"], "status": metrics.get("status", "pending"),
            "acc": metrics.get("acc", {}), "dir": stage["dir"], "job_id": job.get("job_id"),
            "log": metrics.get("log") or job.get("stderr"), "error": metrics.get("error"),
        })
    return rows


def format_status(rows: list[dict]) -> str:
    lines = []
    width = max((len(r["stage"]) for r in rows), default=5)
    for r in rows:
        acc = " ".join(f"{k}={v:.4f}" for k, v in sorted(r["acc"].items()) if isinstance(v, float))
        line = f"  {r['stage']:<{width}}  {r['status']:<8}  {acc}"
        if r["status"] in ("failed", "diverged"):
            line += f"\n  {'':<{width}}  {r['error'] or ''}\n  {'':<{width}}  log: {r['log']}"
        lines.append(line.rstrip())
    return "\n".join(lines)
