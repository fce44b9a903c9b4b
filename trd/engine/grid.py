"""A grid of runs inside one job, one point after another, each with its own directory, checkpoint and
result, so a requeued job skips finished points and resumes the unfinished one where it stopped.

    results = run_grid(ctx.dir / "grid", ctx.env, points, run_point)

points: dicts with a unique "point" name; run_point(point, point_dir) -> result dict (it may checkpoint under
point_dir/checkpoint, through trd.engine.checkpoint). Results are written as <grid dir>/<point>/result.json by
rank 0 once every rank has one; only then is the point's checkpoint dropped.
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable

from trd.atomic import atomic_write_json, read_json
from trd.engine.checkpoint import CheckpointManager
from trd.engine.distributed import DistEnv, barrier

RESULT_FILE = "result.json"


def point_result(grid_dir: Path, name: str) -> dict | None:
    return read_json(Path(grid_dir) / name / RESULT_FILE)


def run_grid(grid_dir: str | Path, env: DistEnv, points: list[dict], run_point: Callable[[dict, Path], dict],
             on_point: Callable[[int, int, dict], None] | None = None) -> list[dict]:
    """on_point(number, of, point) before each point that runs (numbers from 1), e.g. for the live progress."""
    grid_dir = Path(grid_dir)
    names = [p["point"] for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"grid points must have distinct names, got {names}")
    results = []
    for number, point in enumerate(points, start=1):
        point_dir = grid_dir / point["point"]
        result = point_result(grid_dir, point["point"])
        if result is None:
            if on_point is not None:
                on_point(number, len(points), point)
            result = {**point, **run_point(point, point_dir)}
            if env.is_main:
                atomic_write_json(point_dir / RESULT_FILE, result)
            barrier()
            CheckpointManager(point_dir, env).remove()
            gc.collect()  # a point's model, engine and optimiser state go before the next point's are built
        results.append(result)
    return results
