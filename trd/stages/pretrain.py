"""pretrain: cross-entropy on the private source task, from a random initialisation."""
from __future__ import annotations

from trd.config import parse, plain
from trd.config.nodes import TrainConfig, common_config, model_config
from trd.data.role_config import role_config
from trd.engine.supervised import train_from_scratch
from trd.plan import StageKind


def plan(cfg, plan) -> None:
    source = role_config(cfg, "source")
    model, _ = model_config(cfg, source["image_size"])
    plan.add("pretrain", "pretrain", {
        **common_config(cfg), "model": model, "source": source,
        "train": plain(parse(cfg["pretrain"], TrainConfig, "pretrain")),
    }, model={"method": "pretrain"})


def run(ctx) -> dict:
    return train_from_scratch(ctx, "source")


KIND = StageKind("pretrain", plan, run, schema=TrainConfig)
