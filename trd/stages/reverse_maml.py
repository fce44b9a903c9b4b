"""reverse_maml: meta-training that keeps the beneficial task and makes the malicious one hard to fine-tune to
(trd.meta.reverse_maml), from the plain model (init: plain) or from scratch. Each rank draws its own beneficial
and malicious task per step; the engine averages their meta-gradients."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from trd.config import ConfigError, parse, plain
from trd.config.nodes import TrainConfig, common_config, model_config
from trd.config.schema import at_least, knob, one_of, positive
from trd.data.role_config import beneficial_and_malicious
from trd.engine.cycle import SideStream
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.losses.double_backward_mode import fast_double_backward
from trd.meta.inner import OPTIMIZERS, InnerOptimizer
from trd.meta.reverse_maml import ATTACKERS, ReverseMamlWeights, reverse_maml_loss
from trd.models.registry import build_from_config
from trd.models.release import load_released
from trd.plan import StageKind


@dataclass
class InnerConfig:
    name: str = knob("sgd", one_of(*OPTIMIZERS))
    lr: float = knob(0.01, positive())
    momentum: float = knob(0.9, at_least(0))


@dataclass
class ReverseMamlConfig(TrainConfig):
    init: str = knob("plain", one_of("plain", "scratch"))
    inner_steps: int = knob(1, at_least(1))  # k: the simulated fine-tuning's optimiser steps
    inner: InnerConfig = knob(factory=InnerConfig)
    attacker: str = knob("linear", one_of(*ATTACKERS))  # what the simulated fine-tuning adapts: head | everything
    second_order: bool = True  # false: the first-order approximation (inner gradients held constant)
    retain_weight: float = knob(1.0, at_least(0))
    good_weight: float = knob(1.0, at_least(0))  # MAML on beneficial tasks
    bad_weight: float = knob(1.0, at_least(0))  # ascent on malicious tasks
    bad_cap: float | None = knob(None, positive())  # null: 2 ln(malicious classes)
    malicious_batch_size: int = knob(64, at_least(2))
    fast_double_backward: bool = True  # trd's hand-written convolution and BatchNorm double backwards

    def check(self, where: str) -> None:
        if self.batch_size < 2:
            raise ConfigError(f"{where}.batch_size={self.batch_size}: a task splits each rank's batch into support "
                              f"and query halves; use at least 2 per rank")
        if not self.bad_weight:
            raise ConfigError(f"{where}.bad_weight=0 leaves out the malicious tasks: Reverse-MAML needs both task "
                              f"kinds; train `plain` for a model without them")


def plan(cfg, plan) -> None:
    rm = parse(cfg["reverse_maml"], ReverseMamlConfig, "reverse_maml")
    source, malicious = beneficial_and_malicious(cfg)
    model, _ = model_config(cfg, source["image_size"])
    inputs = {}
    if rm.init == "plain":
        if "plain" not in plan:
            raise ConfigError("reverse_maml.init=plain starts from the plain model: add plain before reverse_maml in "
                              "stages, or set reverse_maml.init=scratch")
        inputs["init"] = "plain"
    plan.add("reverse_maml", "reverse_maml", {**common_config(cfg), "model": model, "source": source,
                                              "malicious": malicious, "train": plain(rm)},
             inputs=inputs, model={"method": "reverse_maml"})


def run(ctx) -> dict:
    c, cfg = ctx.config, ctx.config["train"]
    torch.manual_seed(c["seed"])
    if "init" in ctx.inputs:
        model = load_released(ctx.input("init"), expected={"name": c["model"]["name"],
                                                             "image_size": c["source"]["image_size"]})
    else:
        model = build_from_config(c["model"], int(c["source"]["num_classes"]), int(c["source"]["image_size"]))
    good_loader = ctx.train_loader(c["source"], cfg["batch_size"])
    bad = SideStream(ctx.train_loader(c["malicious"], cfg["malicious_batch_size"]))
    engine = ctx.engine(model.to(ctx.device), cfg, good_loader.steps_per_epoch)
    inner = cfg["inner"]
    opt = InnerOptimizer(inner["name"], lr=float(inner["lr"]), momentum=float(inner["momentum"]))
    weights = ReverseMamlWeights(float(cfg["retain_weight"]), float(cfg["good_weight"]), float(cfg["bad_weight"]),
                                 cfg["bad_cap"])
    bad_classes = int(c["malicious"]["num_classes"])
    fast = fast_double_backward if cfg["fast_double_backward"] and cfg["second_order"] else contextlib.nullcontext

    def step(engine, images, labels, global_step):
        with fast():
            return reverse_maml_loss(engine.module, (images, labels), bad.next(global_step, ctx.device), bad_classes,
                                     int(cfg["inner_steps"]), opt, weights, bool(cfg["second_order"]),
                                     cfg["attacker"])

    source_test = ctx.test_loader(c["source"])
    progress = train(engine, good_loader, step, epochs=int(cfg["epochs"]), ckpt=ctx.ckpt, log=ctx.log, env=ctx.env,
                     seed=c["seed"], checkpoint_every=int(cfg.get("checkpoint_every", 0)), desc=ctx.name,
                     on_epoch_end=lambda epoch: {"acc/source": accuracy(engine.module, source_test, ctx.device)})
    result = {"acc": {"source": accuracy(engine.module, source_test, ctx.device)}, "steps": progress["global_step"]}
    ctx.save_released(engine.module)
    ctx.ckpt.remove()
    return result


KIND = StageKind("reverse_maml", plan, run, releases_models=True, inputs=("init",), schema=ReverseMamlConfig)
