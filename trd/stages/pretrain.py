"""pretrain: cross-entropy on the private source task, from a random initialisation."""
from __future__ import annotations

import torch

from trd.config import parse, plain
from trd.config.nodes import TrainConfig, common_config, model_config
from trd.data.role_config import role_config
from trd.engine.supervised import train_supervised
from trd.models.registry import build_from_config
from trd.plan import StageKind


def plan(cfg, plan) -> None:
    source = role_config(cfg, "source")
    model, _ = model_config(cfg, source["image_size"])
    plan.add("pretrain", "pretrain", {
        **common_config(cfg), "model": model, "source": source,
        "train": plain(parse(cfg["pretrain"], TrainConfig, "pretrain")),
    }, model={"method": "pretrain"})


def run(ctx) -> dict:
    c = ctx.config
    torch.manual_seed(c["seed"])
    model = build_from_config(c["model"], int(c["source"]["num_classes"]), int(c["source"]["image_size"]))
    model, metrics = train_supervised(ctx, model, c["source"], c["train"], "source")
    ctx.save_released(model)
    ctx.ckpt.remove()
    return metrics


KIND = StageKind("pretrain", plan, run, schema=TrainConfig)
