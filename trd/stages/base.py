"""What a stage sees: its own config, its inputs' directories, its rank, a logger and a checkpoint manager.

A stage kind is a function `run(ctx) -> metrics dict`, registered by name; the runner does the rest
(status bookkeeping, distributed set-up, turning exceptions into failed/diverged).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from trd.engine.checkpoint import CheckpointManager
from trd.engine.distributed import DistEnv, device_for
from trd.engine.tensorboard import StageLogger

SPEC_FILE = "stage.json"


@dataclass
class StageContext:
    kind: str
    name: str
    config: dict
    dir: Path
    inputs: dict[str, Path]
    env: DistEnv
    log: StageLogger = field(init=False)
    ckpt: CheckpointManager = field(init=False)

    def __post_init__(self):
        self.log = StageLogger(self.dir, self.env)
        self.ckpt = CheckpointManager(self.dir, self.env)

    @property
    def device(self) -> torch.device:
        return device_for(self.env)

    def input(self, role: str) -> Path:
        if role not in self.inputs:
            raise KeyError(f"stage {self.name} has no input {role!r}; it has {sorted(self.inputs)}")
        return self.inputs[role]


StageFn = Callable[[StageContext], dict]
STAGES: dict[str, StageFn] = {}


def stage(kind: str):
    """Registers a stage function under its kind."""

    def register(fn: StageFn) -> StageFn:
        STAGES[kind] = fn
        return fn

    return register


def get_stage(kind: str) -> StageFn:
    import trd.stages.all  # noqa: F401  (registers every built-in stage)

    if kind not in STAGES:
        raise ValueError(f"unknown stage kind {kind!r}: known kinds are {', '.join(sorted(STAGES))}")
    return STAGES[kind]
