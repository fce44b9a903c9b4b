"""Cross-entropy training of a model on one dataset role: what pretrain, transfer and the transfer-resistant
family share."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trd.engine.checkpoint import CheckpointManager
from trd.engine.evaluation import accuracy
from trd.engine.loop import StepFn, train
from trd.models.registry import build_from_config


def cross_entropy_step(engine, images, labels, global_step):
    return F.cross_entropy(engine(images), labels), {}


def train_supervised(ctx, model: torch.nn.Module, role: dict, train_cfg: dict, role_name: str,
                     step: StepFn = cross_entropy_step):
    """Trains model on role's train split with step's loss (resuming from the stage checkpoint); returns (model,
    metrics)."""
    loader = ctx.train_loader(role, train_cfg["batch_size"])
    test_loader = ctx.test_loader(role)
    engine = ctx.engine(model.to(ctx.device), train_cfg, loader.steps_per_epoch)

    def on_epoch_end(epoch: int) -> dict:
        return {f"acc/{role_name}": accuracy(engine.module, test_loader, ctx.device)}

    progress = train(engine, loader, step, epochs=int(train_cfg["epochs"]), ckpt=ctx.ckpt, log=ctx.log,
                     env=ctx.env, seed=ctx.config["seed"], checkpoint_every=int(train_cfg.get("checkpoint_every", 0)),
                     on_epoch_end=on_epoch_end, desc=ctx.name)
    acc = accuracy(engine.module, test_loader, ctx.device)
    metrics = {
        "acc": {role_name: acc},
        "steps": progress["global_step"],
        "steps_per_epoch": loader.steps_per_epoch,
        "train_samples": loader.num_samples,
        "corrupt_skipped": loader.corrupt_skipped,
    }
    return engine.module, metrics


def train_from_scratch(ctx, role_name: str) -> dict:
    """A model of ctx.config["model"] trained from a seeded random initialisation on the role ctx.config[role_name]
    with ctx.config["train"], saved as the stage's model; returns its metrics."""
    c = ctx.config
    torch.manual_seed(c["seed"])
    role = c[role_name]
    model = build_from_config(c["model"], int(role["num_classes"]), int(role["image_size"]))
    model, metrics = train_supervised(ctx, model, role, c["train"], role_name)
    ctx.save_released(model)
    ctx.ckpt.remove()
    return metrics


def train_new_head(ctx, model: torch.nn.Module, role: dict, train_cfg: dict, phase: str) -> tuple[torch.nn.Module, float]:
    """A new head for role on model's frozen body (BatchNorm in eval mode: its statistics stay the body's),
    checkpointed under <stage>/<phase>/ so a resumed job continues it; returns (model, test accuracy)."""
    model.replace_head(int(role["num_classes"]))
    model.set_trainable("linear")
    model = model.to(ctx.device)
    loader = ctx.train_loader(role, train_cfg["batch_size"])
    engine = ctx.engine(model, train_cfg, loader.steps_per_epoch)

    def step(engine, images, labels, global_step):
        engine.module.eval()
        return F.cross_entropy(engine(images), labels), {}

    ckpt = CheckpointManager(ctx.dir / phase, ctx.env)
    train(engine, loader, step, epochs=int(train_cfg["epochs"]), ckpt=ckpt, log=ctx.log, env=ctx.env,
          seed=ctx.config["seed"], checkpoint_every=int(train_cfg.get("checkpoint_every", 0)), desc=f"{ctx.name} {phase}")
    model = engine.module
    model.set_trainable("full")
    ckpt.remove()
    return model, accuracy(model, ctx.test_loader(role), ctx.device)
