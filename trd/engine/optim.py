"""Optimisers and per-step learning-rate schedules from an `optim` config node."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Iterable

import torch

from trd.config.nodes import OPTIMIZERS, SCHEDULES


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: check transfer.mode / k (nothing would be optimised)")
    name = str(cfg["name"]).lower()
    lr = float(cfg["lr"])
    wd = float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(cfg.get("momentum", 0.9)), weight_decay=wd,
            nesterov=bool(cfg.get("nesterov", False)),
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    raise ValueError(f"unknown optimiser optim.name={name!r}: use one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, total_steps: int, cfg: Mapping) -> float:
    """Multiplier of the base lr at a given optimiser step: linear warm-up (warmup_steps, or warmup_fraction of
    total_steps), then the schedule over the remaining steps."""
    warmup = int(cfg.get("warmup_steps", 0)) or int(round(float(cfg.get("warmup_fraction", 0.0)) * total_steps))
    if warmup and step < warmup:
        return (step + 1) / warmup
    schedule = str(cfg.get("schedule", "constant"))
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        floor = float(cfg.get("min_lr_ratio", 0.0))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        milestones = [float(m) for m in cfg.get("milestones", (0.5, 0.75))]
        return float(cfg.get("gamma", 0.1)) ** sum(progress >= m for m in milestones)
    raise ValueError(f"unknown schedule optim.schedule={schedule!r}: use one of {', '.join(SCHEDULES)}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, cfg))
