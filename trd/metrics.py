"""metrics.json of a stage: the one file reports and the dispatcher read (its keys: trd.contract)."""
from __future__ import annotations

from pathlib import Path

from trd.atomic import atomic_write_json, read_json
from trd.contract import METRICS_FILE


def read_metrics(stage_dir: str | Path) -> dict:
    return read_json(Path(stage_dir) / METRICS_FILE, default={}) or {}


def write_metrics(stage_dir: str | Path, metrics: dict) -> None:
    atomic_write_json(Path(stage_dir) / METRICS_FILE, metrics)
