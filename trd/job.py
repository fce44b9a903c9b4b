"""The submitit job of one stage, kept free of torch so that submitit's signal handlers are installed within
a second of the job starting: a USR2 that arrives before them (a short time limit, a slow import on a loaded
node) would kill the job instead of requeueing it. The stage's code is imported when the job is called."""
from __future__ import annotations

from pathlib import Path

import submitit


class StageJob(submitit.helpers.Checkpointable):
    """Runs one stage; on preemption or timeout it is requeued as itself and the stage resumes from its own
    checkpoint."""

    def __init__(self, stage_dir: str | Path):
        self.stage_dir = str(stage_dir)

    def __call__(self) -> dict:
        from trd.runner import run_stage

        return run_stage(self.stage_dir)
