"""Cross-entropy training of a model on one dataset role: what pretrain and transfer share."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trd.engine.evaluation import accuracy
from trd.engine.loop import train


def train_supervised(ctx, model: torch.nn.Module, role: dict, train_cfg: dict, role_name: str):
    """Trains model on role's train split (resuming from the stage checkpoint); returns (model, metrics)."""
    loader = ctx.train_loader(role, train_cfg["batch_size"])
    test_loader = ctx.test_loader(role)
    engine = ctx.engine(model.to(ctx.device), train_cfg, loader.steps_per_epoch)

    def step(engine, images, labels, global_step):
        return F.cross_entropy(engine(images), labels), {}

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
