"""transfer: fine-tune the pretrained model onto the target (full / last-k blocks / linear probe), and the TGT
reference (the same model trained from scratch on the target)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from trd.config import ConfigError, parse, plain
from trd.config.nodes import TrainConfig, check_trainable, common_config, model_config
from trd.config.schema import at_least, knob
from trd.data.role_config import check_same_image_size, role_config
from trd.engine.supervised import train_supervised
from trd.models.registry import build_from_config
from trd.models.release import load_released
from trd.plan import StageKind


@dataclass
class TransferConfig(TrainConfig):
    mode: str = "full"  # full | last_k | linear
    k: int | None = knob(None, at_least(1))  # blocks trained with mode=last_k
    scratch_baseline: bool = True  # also train the TGT reference: the same model from scratch on the target


def plan(cfg, plan) -> None:
    if "pretrain" not in plan:
        raise ConfigError("stage transfer needs pretrain: add pretrain before transfer in stages")
    transfer = parse(cfg["transfer"], TransferConfig, "transfer")
    roles = {"source": role_config(cfg, "source"), "target": role_config(cfg, "target")}
    check_same_image_size(roles)
    model, blocks = model_config(cfg, roles["target"]["image_size"])
    check_trainable(transfer.mode, transfer.k, "transfer", blocks)
    train = plain(transfer)
    mode, k = train.pop("mode"), train.pop("k")
    scratch_baseline = train.pop("scratch_baseline")
    base = {**common_config(cfg), "model": model, "target": roles["target"], "train": train}
    plan.add("transfer", "transfer", {**base, "init": "pretrained", "mode": mode, "k": k},
             inputs={"pretrained": "pretrain"}, model={"method": "tl"})
    if scratch_baseline:
        plan.add("tgt", "transfer", {**base, "init": "scratch", "mode": "full", "k": None}, model={"method": "tgt"})


def run(ctx) -> dict:
    c = ctx.config
    torch.manual_seed(c["seed"])
    source_head = None
    if c["init"] == "scratch":
        model = build_from_config(c["model"], int(c["target"]["num_classes"]), int(c["target"]["image_size"]))
    else:
        model = load_released(ctx.input("pretrained"),
                              expected={"name": c["model"]["name"], "image_size": c["target"]["image_size"]})
        source_head = copy.deepcopy(model.head)
        model.replace_head(int(c["target"]["num_classes"]))
        model.set_trainable(c["mode"], k=c["k"])
    model, metrics = train_supervised(ctx, model, c["target"], c["train"], "target")
    ctx.save_released(model, source_head=source_head)
    ctx.ckpt.remove()
    return metrics


KIND = StageKind("transfer", plan, run, releases_models=True, inputs=("pretrained",), schema=TransferConfig)
