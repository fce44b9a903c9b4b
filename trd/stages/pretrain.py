"""pretrain: cross-entropy on the private source task, from a random initialisation."""
from __future__ import annotations

import torch

from trd.models import build_model
from trd.plan import planner
from trd.stages.base import stage
from trd.stages.common import common_config, plain, role_config, save_outputs, train_config
from trd.stages.supervised import train_supervised


@planner("pretrain")
def plan_pretrain(cfg, plan) -> None:
    plan.add("pretrain", "pretrain", {
        **common_config(cfg),
        "model": plain(cfg["model"]),
        "source": role_config(cfg, "source"),
        "train": train_config(cfg, "pretrain"),
    }, labels={"method": "pretrain"})


def build_for_role(model_cfg: dict, role: dict) -> torch.nn.Module:
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    return build_model(model_cfg["name"], num_classes=int(role["num_classes"]), image_size=int(role["image_size"]),
                       **options)


@stage("pretrain")
def run_pretrain(ctx) -> dict:
    c = ctx.config
    torch.manual_seed(c["seed"])
    model = build_for_role(c["model"], c["source"])
    model, metrics = train_supervised(ctx, model, c["source"], c["train"], "source")
    save_outputs(ctx, model)
    ctx.ckpt.remove()
    return metrics
