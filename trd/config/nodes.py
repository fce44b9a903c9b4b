"""Config nodes that several stage kinds share: an optimiser, a training run, what every stage job depends on."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trd.config.errors import ConfigError
from trd.config.schema import (
    at_least,
    each,
    knob,
    one_of,
    parse,
    plain,
    positive,
    to_data,
    within,
)
from trd.models.base import TRAINABLE_MODES
from trd.models.registry import block_count

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


@dataclass
class OptimConfig:
    name: str = knob(rule=one_of(*OPTIMIZERS))
    lr: float = knob(rule=positive())
    momentum: float = knob(0.9, within(0, 1, high_open=True))
    nesterov: bool = False
    weight_decay: float = knob(0.0, at_least(0))
    betas: list[float] = knob([0.9, 0.999], each(within(0, 1, high_open=True)))
    schedule: str = knob("constant", one_of(*SCHEDULES))
    warmup_steps: int = knob(0, at_least(0))
    warmup_fraction: float = knob(0.0, within(0, 1, high_open=True))  # warm-up as a share of the run's steps
    min_lr_ratio: float = knob(0.0, within(0, 1))
    milestones: list[float] = knob([0.5, 0.75], each(within(0, 1)))
    gamma: float = knob(0.1, within(0, 1, low_open=True))

    def check(self, where: str) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"{where}.betas={self.betas} must hold two numbers, e.g. [0.9, 0.999]")
        if self.warmup_steps and self.warmup_fraction:
            raise ConfigError(f"{where}.warmup_steps={self.warmup_steps} and {where}.warmup_fraction="
                              f"{self.warmup_fraction} both set the warm-up: keep one")


@dataclass
class TrainConfig:
    """A training stage's node: how long, how big a batch, which optimiser."""
    epochs: int = knob(rule=at_least(1))
    batch_size: int = knob(rule=at_least(1))
    optim: OptimConfig = knob()
    grad_clip: float = knob(0.0, at_least(0))
    checkpoint_every: int = knob(0, at_least(0))  # optimiser steps between mid-epoch checkpoints (0: epoch ends)


def check_trainable(mode: str, k: int | None, where: str, blocks: int | None = None) -> None:
    """mode/k of a training run: k is the number of last blocks trained with mode=last_k, and no more than the
    model has (blocks, when known)."""
    if mode not in TRAINABLE_MODES:
        raise ConfigError(f"{where}.mode={mode!r} is not known: use one of {', '.join(TRAINABLE_MODES)}")
    if mode == "last_k":
        if k is None or k < 1:
            raise ConfigError(f"{where}.mode=last_k needs {where}.k >= 1 (got {k!r})")
        if blocks is not None and k > blocks:
            raise ConfigError(f"{where}.k={k} is out of range: the model has {blocks} blocks, so k must be in "
                              f"[1, {blocks}]")
    elif k is not None:
        raise ConfigError(f"{where}.k={k} only applies to mode=last_k: drop it or set {where}.mode=last_k")


def world_size(cfg: Mapping) -> int:
    launcher = parse(cfg["launcher"], LauncherConfig, "launcher")
    return launcher.nodes * launcher.tasks_per_node


@dataclass
class DataOptions:
    num_workers: int = knob(0, at_least(0))
    skip_corrupt: bool = False


def data_options(cfg: Mapping) -> dict:
    data = to_data(cfg["data"])
    return plain(parse({k: data[k] for k in ("num_workers", "skip_corrupt") if k in data}, DataOptions, "data"))


def common_config(cfg: Mapping) -> dict:
    """What every stage job's output depends on besides its own node."""
    return {"seed": int(cfg["seed"]), "world_size": world_size(cfg),
            "deepspeed": plain(parse(cfg["deepspeed"], DeepSpeedConfig, "deepspeed")),
            "data_options": data_options(cfg)}


def model_config(cfg: Mapping, image_size: int) -> tuple[dict, int]:
    """The model node as data, checked by building the model once on the CPU, and its block count."""
    model = to_data(cfg["model"])
    if not isinstance(model, Mapping) or not model.get("name"):
        raise ConfigError(f"model={model!r} must be a mapping with a name: choose one with model=<name>")
    try:
        return model, block_count(model, image_size)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None


@dataclass
class DeepSpeedConfig:
    zero_stage: int = knob(0, one_of(0, 1, 2))  # trd's second-order losses need the full gradients of ZeRO 0-2
    precision: str = knob("auto", one_of("auto", "fp32", "bf16"))


@dataclass
class LauncherConfig:
    name: str = knob(rule=one_of("local", "slurm"))
    wait: bool | None = None
    nodes: int = knob(1, at_least(1))
    tasks_per_node: int = knob(1, at_least(1))
    cpus_per_task: int = knob(1, at_least(1))
    gpus_per_node: int = knob(0, at_least(0))
    mem_gb: int | None = knob(None, at_least(1))
    timeout_min: float = knob(600, positive())
    max_num_timeout: int = knob(3, at_least(0))
    max_parallel: int = knob(1, at_least(1))
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = knob(64, at_least(1))
    setup: list[str] = knob([])
    additional: dict = knob({})
    poll_s: float = knob(2.0, positive())
    signal_delay_s: int = knob(30, at_least(0))


@dataclass
class PgdConfig:
    """An L-inf PGD attack in [0, 1] pixel units (trd.attacks.pgd); the defaults are the CIFAR ones."""
    eps: float = knob(8 / 255, within(0, 1))
    step: float = knob(2 / 255, within(0, 1, low_open=True))
    steps: int = knob(7, at_least(1))
    random_start: bool = True
