"""robust_pretrain: PGD adversarial training on the source task, one model per robust_pretrain.lams; lam > 0
adds CARTL's Feature Distance Minimisation at the boundary of the last k blocks (trd.attacks.adversarial_training).
These are the public robust models that robust_transfer transfers."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trd.attacks.adversarial_training import (
    PgdSettings,
    adversarial_training_loss,
    robust_accuracy,
)
from trd.attacks.pgd import PixelSpace
from trd.config import ConfigError, parse, plain
from trd.config.nodes import PgdConfig, TrainConfig, common_config, model_config
from trd.config.schema import at_least, each, knob
from trd.data.role_config import role_config
from trd.engine.loop import step_seed
from trd.engine.supervised import train_supervised
from trd.models.registry import build_from_config
from trd.plan import StageKind


@dataclass
class RobustPretrainConfig(TrainConfig):
    lams: list[float] = knob([0.0], each(at_least(0)))  # one model each: 0 is PGD-AT, > 0 adds FDM
    # FDM compares the features entering the last k blocks, those transfer trains (null: robust_transfer.k)
    k: int | None = knob(None, at_least(1))
    attack: PgdConfig = knob(factory=PgdConfig)

    def check(self, where: str) -> None:
        if not self.lams or len(set(self.lams)) != len(self.lams):
            raise ConfigError(f"{where}.lams={self.lams} must list each lam once, e.g. [0.0, 0.01]")


def source_method(lam: float) -> str:
    return "fdm" if lam else "pgd_at"


def plan(cfg, plan) -> None:
    node = parse(cfg["robust_pretrain"], RobustPretrainConfig, "robust_pretrain")
    source = role_config(cfg, "source")
    model, blocks = model_config(cfg, source["image_size"])
    if node.k is None:
        from trd.stages.robust_transfer import RobustTransferConfig

        if cfg.get("robust_transfer") is None:
            raise ConfigError("robust_pretrain.k is null, which means robust_transfer.k, but there is no "
                              "robust_transfer node: set robust_pretrain.k")
        node.k = parse(cfg["robust_transfer"], RobustTransferConfig, "robust_transfer").k
    if any(node.lams) and node.k >= blocks:
        raise ConfigError(f"robust_pretrain.k={node.k} leaves no frozen block for the feature distance (the model has "
                          f"{blocks} blocks): use k in [1, {blocks - 1}] or lams without FDM ([0.0])")
    train = plain(node)
    lams, k, attack = train.pop("lams"), train.pop("k"), train.pop("attack")
    for lam in lams:
        labels = {"method": source_method(lam), **({"lam": lam} if lam else {})}
        plan.add(f"robust_pretrain/{source_method(lam)}" + (f"_lam{lam:g}" if lam else ""), "robust_pretrain",
                 {**common_config(cfg), "model": model, "source": source, "train": train, "attack": attack,
                  "lam": lam, "k": k if lam else None}, model=labels)


def run(ctx) -> dict:
    c = ctx.config
    torch.manual_seed(c["seed"])
    role = c["source"]
    model = build_from_config(c["model"], int(role["num_classes"]), int(role["image_size"]))
    space, pgd, lam = PixelSpace.of_role(role), PgdSettings(**c["attack"]), float(c["lam"])
    boundary = model.block_names[-int(c["k"]) - 1] if lam else None

    def step(engine, images, labels, global_step):
        generator = torch.Generator().manual_seed(step_seed(c["seed"], ctx.env.rank, global_step))
        return adversarial_training_loss(engine.module, images, labels, space, pgd, lam=lam, boundary=boundary,
                                         generator=generator)

    model, metrics = train_supervised(ctx, model, role, c["train"], "source", step=step)
    metrics["rob"] = {"source": robust_accuracy(model, ctx.test_loader(role), ctx.device, space, pgd, c["seed"],
                                                   ctx.env.rank)}
    ctx.save_released(model)
    ctx.ckpt.remove()
    return metrics


KIND = StageKind("robust_pretrain", plan, run, schema=RobustPretrainConfig)
