"""transfer: fine-tune the pretrained model onto the target (all / last-k blocks / linear probe), and the TGT
reference (the same model trained from scratch on the target)."""
from __future__ import annotations

import copy

import torch

from trd.models.io import load_model
from trd.plan import ConfigError, planner
from trd.stages.base import stage
from trd.stages.common import (check_image_sizes, common_config, plain, released_model_path, role_config,
                               save_outputs, train_config)
from trd.stages.pretrain import build_for_role
from trd.stages.supervised import train_supervised

MODES = ("full", "last_k", "linear")


@planner("transfer", releases_models=True)
def plan_transfer(cfg, plan) -> None:
    train = train_config(cfg, "transfer", extra_keys=("mode", "k", "scratch_baseline"))
    scratch_baseline = bool(train.pop("scratch_baseline", False))
    mode = train.pop("mode", "full")
    k = train.pop("k", None)
    if mode not in MODES:
        raise ConfigError(f"transfer.mode={mode!r} is not known: use one of {', '.join(MODES)}")
    if mode == "last_k" and not (isinstance(k, int) and k >= 1):
        raise ConfigError(f"transfer.mode=last_k needs transfer.k >= 1 (got {k!r})")
    base = {**common_config(cfg), "model": plain(cfg["model"]), "target": role_config(cfg, "target"), "train": train}
    if "pretrain" not in plan:
        raise ConfigError("stage transfer needs pretrain: add pretrain before transfer in stages")
    check_image_sizes(cfg, "source", "target")
    plan.add("transfer", "transfer", {**base, "init": "pretrained", "mode": mode, "k": k},
             inputs={"pretrained": "pretrain"}, labels={"method": "tl"})
    if scratch_baseline:
        plan.add("tgt", "transfer", {**base, "init": "scratch", "mode": "full", "k": None}, labels={"method": "tgt"})


@stage("transfer")
def run_transfer(ctx) -> dict:
    c = ctx.config
    torch.manual_seed(c["seed"])
    source_head = None
    if c["init"] == "scratch":
        model = build_for_role(c["model"], c["target"])
    else:
        model = load_model(released_model_path(ctx.input("pretrained")),
                           expected={"name": c["model"]["name"], "image_size": c["target"]["image_size"]})
        source_head = copy.deepcopy(model.head)
        model.replace_head(int(c["target"]["num_classes"]))
        model.set_trainable({"full": "all", "last_k": "last_k", "linear": "linear"}[c["mode"]], k=c["k"])
    model, metrics = train_supervised(ctx, model, c["target"], c["train"], "target")
    save_outputs(ctx, model, source_head=source_head)
    ctx.ckpt.remove()
    return metrics
