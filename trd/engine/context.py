"""What a stage sees in its job: its own config, its inputs' directories, its rank, a logger, a checkpoint
manager, and the loaders, engine and outputs every training stage builds the same way."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trd.config.errors import ConfigError
from trd.engine.checkpoint import CheckpointManager
from trd.engine.distributed import DistEnv, device_for
from trd.engine.tensorboard import StageLogger


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

    def _loader(self, role: dict, split: str, batch_size: int, train: bool):
        from trd.data import build_loader, ensure_role_shards

        ensure_role_shards(role)
        opts = self.config["data_options"]
        return build_loader(role, split, batch_size, train=train, seed=self.config["seed"], rank=self.env.rank,
                            world_size=self.env.world_size, num_workers=opts["num_workers"],
                            skip_corrupt=opts["skip_corrupt"])

    def train_loader(self, role: dict, batch_size: int):
        """role's train split, batch_size over all ranks together."""
        if batch_size % self.env.world_size:
            raise ConfigError(f"batch_size={batch_size} does not split over {self.env.world_size} ranks: "
                              f"use a multiple of {self.env.world_size}")
        return self._loader(role, "train", batch_size // self.env.world_size, train=True)

    def test_loader(self, role: dict, batch_size: int = 256):
        return self.eval_loader(role, "test", batch_size)

    def eval_loader(self, role: dict, split: str, batch_size: int = 256):
        """Every sample of role's split once, in a fixed order, without augmentation."""
        return self._loader(role, split, batch_size, train=False)

    def engine(self, model: torch.nn.Module, train: dict, steps_per_epoch: int | None = None,
               total_steps: int | None = None):
        """A DeepSpeed engine for model with train's optimiser and a schedule over train's epochs of
        steps_per_epoch, or over total_steps (train: a TrainConfig as data)."""
        from trd.engine.deepspeed_engine import build_engine
        from trd.engine.optim import build_optimizer, build_scheduler

        optimizer = build_optimizer(model.parameters(), train["optim"])
        total = total_steps if total_steps is not None else train["epochs"] * steps_per_epoch
        scheduler = build_scheduler(optimizer, train["optim"], total_steps=total)
        return build_engine(model, optimizer, scheduler, self.config["deepspeed"],
                            micro_batch=train["batch_size"] // self.env.world_size, env=self.env,
                            grad_clip=float(train.get("grad_clip", 0.0)))

    def save_released(self, model: torch.nn.Module, source_head: torch.nn.Module | None = None) -> None:
        """model.safetensors (and the private source head beside it), from rank 0."""
        from trd.models.release import save_released

        if self.env.is_main:
            save_released(self.dir, model, source_head)
