"""A stage's live progress, for the console and `launch/status.py`: a small JSON file in the stage directory,
replaced whole (write, then rename) at most every few seconds by rank 0. Nothing here may fail or slow a stage:
a write that fails is dropped, and a file that cannot be read is "unknown" to its readers."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from trd import contract

WRITE_EVERY_S = 2.0


class ProgressFile:
    """What a stage's job is doing now: its phase ("train 3/10"), optimiser steps done and planned in this
    phase, the latest loss, the step rate since the previous write, and for a grid the point it is at."""

    def __init__(self, stage_dir: str | Path, enabled: bool = True, every_s: float = WRITE_EVERY_S):
        self.path = Path(stage_dir) / contract.PROGRESS_FILE
        self.enabled, self.every_s = enabled, every_s
        self.state: dict = {"started": time.time()}
        self._last_write = 0.0
        self._rate_mark: tuple[float, int] | None = None  # (time, step) the current rate is measured from

    def phase(self, name: str, step: int, steps: int) -> None:
        """A run of the training loop starts or resumes at `step` of `steps`."""
        self.state.update(phase=name, step=step, steps=steps, loss=None)
        self._rate_mark = (time.monotonic(), step)
        self._write()

    def step(self, step: int, loss: float | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        self.state["step"] = step
        if loss is not None:
            self.state["loss"] = loss
        if now - self._last_write < self.every_s:
            return
        if self._rate_mark is not None and now > self._rate_mark[0] and step > self._rate_mark[1]:
            self.state["rate"] = (step - self._rate_mark[1]) / (now - self._rate_mark[0])
        self._rate_mark = (now, step)
        self._write()

    def note(self, **fields) -> None:
        """Context for the next write, e.g. the epoch, or point=3, points=8 in a grid (a new phase follows)."""
        self.state.update(fields)

    def _write(self) -> None:
        if not self.enabled:
            return
        self._last_write = time.monotonic()
        self.state["updated"] = time.time()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.path)
        except (OSError, TypeError, ValueError):
            pass  # a full disk or an odd value shows as stale progress, never as a failed stage


def read_progress(stage_dir: str | Path) -> dict | None:
    try:
        data = json.loads((Path(stage_dir) / contract.PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def seconds_left(progress: dict) -> float | None:
    """This phase's steps left at the current rate; in a grid, the points not yet started count as long as this
    one (a grid's points share their budget)."""
    rate, step, steps = progress.get("rate"), progress.get("step"), progress.get("steps")
    if not isinstance(rate, (int, float)) or rate <= 0 or not isinstance(step, int) or not isinstance(steps, int):
        return None
    points_left = 0
    if isinstance(progress.get("point"), int) and isinstance(progress.get("points"), int):
        points_left = max(0, progress["points"] - progress["point"])
    return (max(0, steps - step) + points_left * steps) / rate
