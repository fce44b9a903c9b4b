"""Resume checkpoints of a running stage.

DeepSpeed writes the engine state (each rank its own ZeRO partition) under a fresh tag; only once every rank
has finished does rank 0 atomically point resume.json at that tag, keeping the tag before it too. A job killed
mid-save therefore resumes from the previous complete checkpoint, never from a torn one; a complete one that
later cannot be read (a truncated file) falls back to the one before it with a warning. Files are read as
tensors and plain data only (trd.engine.safe_checkpoint).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from trd.atomic import atomic_write_json, read_json
from trd.engine.distributed import DistEnv, barrier
from trd.engine.safe_checkpoint import UnsafeCheckpointError, load_safely

POINTER = "resume.json"


class CheckpointError(RuntimeError):
    """No checkpoint of the stage can be read; the message names the directory and the fix."""


class CheckpointManager:
    def __init__(self, stage_dir: str | Path, env: DistEnv):
        self.dir = Path(stage_dir) / "checkpoint"
        self.env = env

    def save(self, engine, progress: dict) -> None:
        tag = f"step{int(progress['global_step']):09d}"
        engine.save_checkpoint(str(self.dir), tag=tag, client_state={"progress": progress}, save_latest=False)
        barrier()
        if self.env.is_main:
            latest = read_json(self.dir / POINTER)
            previous = {"tag": latest["tag"], "progress": latest["progress"]} if latest else None
            if previous and previous["tag"] == tag:
                previous = latest.get("previous")
            atomic_write_json(self.dir / POINTER, {"tag": tag, "progress": progress, "previous": previous})
            keep = {tag, previous["tag"] if previous else None}
            for old in self.dir.iterdir():
                if old.is_dir() and old.name not in keep:
                    shutil.rmtree(old, ignore_errors=True)
        barrier()

    def progress(self) -> dict | None:
        """The progress of the newest complete checkpoint (what a resumed job starts from, if it can be read)."""
        pointer = read_json(self.dir / POINTER)
        return None if pointer is None else pointer["progress"]

    def load(self, engine) -> dict | None:
        """Restores the engine from the newest readable checkpoint (the latest, else the one before it); returns
        its progress, or None when the stage has no checkpoint."""
        pointer = read_json(self.dir / POINTER)
        if pointer is None:
            return None
        load_safely(engine)
        candidates = [pointer] + ([pointer["previous"]] if pointer.get("previous") else [])
        problems = []
        for candidate in candidates:
            try:
                path, _ = engine.load_checkpoint(str(self.dir), tag=candidate["tag"])
                if path is None:
                    raise FileNotFoundError(f"{self.dir / candidate['tag']} has no model states")
            except UnsafeCheckpointError:
                raise
            except Exception as err:  # truncated or missing files: torch and DeepSpeed raise many kinds
                problems.append(f"{self.dir / candidate['tag']}: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
                if self.env.is_main:
                    print(f"trd: warning: checkpoint {self.dir / candidate['tag']} cannot be read "
                          f"({problems[-1]}); trying an older one", file=sys.stderr, flush=True)
                continue
            return candidate["progress"]
        raise CheckpointError(f"no checkpoint in {self.dir} can be read ({'; '.join(problems)}): delete {self.dir} "
                              f"to restart the stage from its beginning")

    def remove(self) -> None:
        """Drops resume state once the stage's final outputs are written."""
        barrier()
        if self.env.is_main:
            shutil.rmtree(self.dir, ignore_errors=True)
