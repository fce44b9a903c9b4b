"""metrics.json of a stage: the one file reports and the dispatcher read."""
from __future__ import annotations

from pathlib import Path

from trd.engine.atomic import atomic_write_json, read_json

FILE = "metrics.json"
RUNNING, DONE, FAILED, DIVERGED = "running", "done", "failed", "diverged"


def read_metrics(stage_dir: str | Path) -> dict:
    return read_json(Path(stage_dir) / FILE, default={})


def write_metrics(stage_dir: str | Path, metrics: dict) -> None:
    atomic_write_json(Path(stage_dir) / FILE, metrics)


def is_done(stage_dir: str | Path) -> bool:
    return read_metrics(stage_dir).get("status") == DONE
