"""Resume checkpoints of a running stage.

DeepSpeed writes the engine state (each rank its own ZeRO partition) under a fresh tag; only once every
rank has finished does rank 0 atomically point resume.json at that tag. A job killed mid-save therefore
resumes from the previous complete checkpoint, never from a torn one.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from trd.atomic import atomic_write_json, read_json
from trd.engine.distributed import DistEnv, barrier

POINTER = "resume.json"


class CheckpointManager:
    def __init__(self, stage_dir: str | Path, env: DistEnv):
        self.dir = Path(stage_dir) / "checkpoint"
        self.env = env

    def save(self, engine, progress: dict) -> None:
        tag = f"step{int(progress['global_step']):09d}"
        engine.save_checkpoint(str(self.dir), tag=tag, client_state={"progress": progress}, save_latest=False)
        barrier()
        if self.env.is_main:
            atomic_write_json(self.dir / POINTER, {"tag": tag, "progress": progress})
            for old in self.dir.iterdir():
                if old.is_dir() and old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)
        barrier()

    def progress(self) -> dict | None:
        pointer = read_json(self.dir / POINTER)
        return None if pointer is None else pointer["progress"]

    def load(self, engine) -> dict | None:
        """Restores the engine from the last complete checkpoint; returns its progress, or None."""
        pointer = read_json(self.dir / POINTER)
        if pointer is None:
            return None
        path, _ = engine.load_checkpoint(str(self.dir), tag=pointer["tag"])
        if path is None:
            raise RuntimeError(f"checkpoint {self.dir / pointer['tag']} named in {POINTER} could not be loaded")
        return pointer["progress"]

    def remove(self) -> None:
        """Drops resume state once the stage's final outputs are written."""
        barrier()
        if self.env.is_main:
            shutil.rmtree(self.dir, ignore_errors=True)
