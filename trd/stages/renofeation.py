"""renofeation: transfer from the public pretrained model (stage renofeation.public) onto the target by each of
renofeation.methods, the study's methods and baselines (Chin et al., 2021):

* linear: a new head on the frozen pretrained body;  finetune: every weight from the pretrained ones;
* l2sp: fine-tuning pulled toward the pretrained weights (trd.losses.l2sp);
* delta: fine-tuning with the pretrained model's block outputs distilled (DELTA without its attention weights);
* scratch: a random initialisation, plain cross-entropy;
* renofeation: a random initialisation trained with the frozen pretrained model's block outputs distilled,
  spatial dropout after the distilled blocks, and stochastic weight averaging (trd.engine.swa).

renofeation.student gives scratch and renofeation another architecture than the public model's; its blocks are
then paired with the public model's by resolution, through 1x1 matching convolutions (trd.models.feature_matching).

renofeation.ablation adds finetune, l2sp, delta and scratch with spatial dropout and SWA (the study's ablation).
Every model is released and labelled with its method; the agnostic stage then attacks it through the public
model it never saw."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from trd.config import ConfigError, parse, plain
from trd.config.nodes import TrainConfig, common_config, model_config
from trd.config.schema import at_least, each, knob, one_of, positive, within
from trd.data.role_config import role_config
from trd.engine.evaluation import accuracy
from trd.engine.supervised import train_supervised
from trd.engine.swa import SwaSchedule, WithAverage
from trd.losses.feature_distillation import block_distillation
from trd.losses.l2sp import l2sp_penalty, starting_point
from trd.models.feature_matching import FeatureMatching, StudentWithMatching, pair_blocks
from trd.models.registry import build_from_config
from trd.models.release import load_released
from trd.models.spatial_dropout import forward_with_dropout
from trd.plan import StageKind


@dataclass(frozen=True)
class Recipe:
    init: str = "pretrained"  # pretrained | scratch
    linear: bool = False  # train the head only, on the frozen body
    l2sp: bool = False
    distill: bool = False
    dropout: bool = False
    swa: bool = False


METHODS = {
    "linear": Recipe(linear=True),
    "finetune": Recipe(),
    "l2sp": Recipe(l2sp=True),
    "delta": Recipe(distill=True),
    "scratch": Recipe(init="scratch"),
    "renofeation": Recipe(init="scratch", distill=True, dropout=True, swa=True),
}
ABLATED = ("finetune", "l2sp", "delta", "scratch")
USES = {"distill": ("distill_weight", "distill_blocks"), "dropout": ("dropout", "distill_blocks"),
        "l2sp": ("l2sp_alpha", "l2sp_beta"), "swa": ("swa",)}


@dataclass
class SwaConfig:
    lr: float = knob(0.005, positive())  # the constant learning rate of the averaging phase (the study: half of 0.01)
    every: int = knob(500, at_least(1))  # optimiser steps between averaged weights (the study: 500 of 30,000)
    start: float = knob(0.5, within(0, 1, high_open=True))  # the share of the run before averaging begins


@dataclass
class RenofeationConfig(TrainConfig):
    methods: list[str] = knob(["finetune", "renofeation"], each(one_of(*METHODS)))
    ablation: bool = False  # also finetune, l2sp, delta and scratch with spatial dropout and SWA
    public: str = "pretrain"  # the stage whose model is the public pretrained one
    distill_weight: float = knob(0.003, positive())  # per sample, the sum of squared differences over every block
    distill_blocks: list[str] | None = None  # blocks whose outputs are distilled (dropout follows them); null: all
    # the architecture of the randomly initialised methods (scratch, renofeation), a model node ({name, options});
    # null: the public model's. Another one distils distill_blocks (null: the public model's last block of each
    # resolution) from the student's last block of the same resolution, through 1x1 convolutions
    student: dict[str, Any] | None = None
    dropout: float = knob(0.1, within(0, 1, high_open=True))  # spatial dropout after each distilled block
    l2sp_alpha: float = knob(0.01, positive())  # pull of the body toward its pretrained weights
    l2sp_beta: float = knob(0.01, at_least(0))  # plain weight decay of the new head
    swa: SwaConfig = knob(factory=SwaConfig)

    def check(self, where: str) -> None:
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"{where}.methods={self.methods} must list each method once")


def plan(cfg, plan) -> None:
    node = parse(cfg["renofeation"], RenofeationConfig, "renofeation")
    if node.public not in plan:
        raise ConfigError(f"renofeation.public={node.public!r} is not a stage of this plan: add {node.public} before "
                          f"renofeation in stages, or name the stage whose model is the public one")
    target = role_config(cfg, "target")
    model, _ = model_config(cfg, target["image_size"])
    public = build_from_config(model, int(target["num_classes"]), int(target["image_size"]))
    blocks = public.block_names
    unknown = sorted(set(node.distill_blocks or []) - set(blocks))
    if unknown or node.distill_blocks == []:
        raise ConfigError(f"renofeation.distill_blocks={node.distill_blocks} must name blocks of {model['name']}: "
                          f"use some of {', '.join(blocks)}, or null for all")
    options = plain(node)
    options["distill_blocks"] = node.distill_blocks or blocks
    student = _student(node, public, target) if node.student is not None else None
    base = {**common_config(cfg), "model": model, "target": target,
            "train": {f.name: options[f.name] for f in fields(TrainConfig)}}
    for method in node.methods:
        for ablated in ((False, True) if node.ablation and method in ABLATED else (False,)):
            recipe = replace(METHODS[method], dropout=True, swa=True) if ablated else METHODS[method]
            # a stage carries only the options its recipe reads, so changing one reruns only the methods it affects
            used = [key for flag, keys in USES.items() if getattr(recipe, flag) for key in keys]
            needs_public = recipe.init == "pretrained" or recipe.distill
            # a student of its own architecture: the scratch-initialised methods' model, its pairs for distillation
            own = student if student is not None and recipe.init == "scratch" else {}
            if own and not recipe.distill:
                own = {"student": own["student"]}
            plan.add(f"renofeation/{method}" + ("+dropout+swa" if ablated else ""), "renofeation",
                     {**base, **{key: options[key] for key in dict.fromkeys(used)}, "recipe": asdict(recipe), **own},
                     inputs={"pretrained": node.public} if needs_public else {},
                     model={"method": method, **({"dropout": True, "swa": True} if ablated else {})})


def _student(node: RenofeationConfig, teacher, target: dict) -> dict:
    """{student: its model node, distill_pairs: [[student block, teacher block], ...], distill_blocks: the teacher's
    blocks of those pairs}, checked by building the student once on the CPU beside the teacher (the public model's
    architecture)."""
    if not node.student.get("name"):
        raise ConfigError(f"renofeation.student={node.student!r} must be a model node with a name, e.g. "
                          f"{{name: mobilenet_v2}}, or null for the public model's architecture")
    classes, size = int(target["num_classes"]), int(target["image_size"])
    try:
        student = build_from_config(node.student, classes, size)
        pairs = pair_blocks(student, teacher, node.distill_blocks, size)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"renofeation.student: {err}") from None
    return {"student": dict(node.student), "distill_pairs": pairs, "distill_blocks": [t for _, t in pairs]}


def run(ctx) -> dict:
    c, recipe = ctx.config, ctx.config["recipe"]
    role, device = c["target"], ctx.device
    torch.manual_seed(c["seed"])
    public = None
    if "pretrained" in ctx.inputs:
        public = load_released(ctx.input("pretrained"),
                               expected={"name": c["model"]["name"], "image_size": role["image_size"]})
    if recipe["init"] == "pretrained":
        model = copy.deepcopy(public)
        model.replace_head(int(role["num_classes"]))
    else:
        model = build_from_config(c.get("student") or c["model"], int(role["num_classes"]), int(role["image_size"]))
    if recipe["linear"]:
        model.set_trainable("linear")
    teacher = public.eval().requires_grad_(False) if recipe["distill"] else None
    # the teacher's blocks and the student's, pairwise (the same blocks when the architecture is the same)
    pairs = c.get("distill_pairs") or [[name, name] for name in c.get("distill_blocks", [])]
    blocks, teacher_blocks = [s for s, _ in pairs], [t for _, t in pairs]
    matching = FeatureMatching.between(model, teacher, pairs, int(role["image_size"])) \
        if "distill_pairs" in c else None
    teacher = teacher.to(device) if teacher is not None else None
    trained = StudentWithMatching(model, matching) if matching is not None else model
    dropout = float(c["dropout"]) if recipe["dropout"] else 0.0
    start = {n: t.to(device) for n, t in starting_point(model).items()} if recipe["l2sp"] else None
    train = c["train"]
    loader = ctx.train_loader(role, train["batch_size"])  # the run's length, and SWA's BatchNorm pass at the end
    total = int(train["epochs"]) * loader.steps_per_epoch
    swa = SwaSchedule(int(c["swa"]["start"] * total), int(c["swa"]["every"]), float(c["swa"]["lr"])) \
        if recipe["swa"] else None

    def step(engine, images, labels, global_step):
        module = engine.module.model if swa else engine.module
        if swa:
            swa.before_step(engine.module, engine.optimizer, global_step)
        module, matched = (module.model, module.matching) if matching is not None else (module, None)
        if recipe["linear"]:
            module.eval()  # the frozen body's BatchNorm keeps the pretrained statistics
        logits, taps = forward_with_dropout(module, images, blocks, dropout)
        loss, scalars = F.cross_entropy(logits, labels), {}
        if teacher is not None:
            with torch.no_grad():
                _, targets = teacher.forward_with_taps(images, teacher_blocks)
            distance = block_distillation(matched(taps) if matched is not None else taps, targets)
            loss = loss + float(c["distill_weight"]) * distance
            scalars["distillation"] = float(distance.detach())
        if start is not None:
            loss = loss + l2sp_penalty(module, start, float(c["l2sp_alpha"]), float(c["l2sp_beta"]))
        return loss, scalars

    trained, metrics = train_supervised(ctx, WithAverage(trained) if swa else trained, role, train, "target",
                                        step=step)
    if swa:
        last = metrics["acc"]["target"]
        model = swa.finish(trained, metrics["steps"], loader, device)
        metrics["acc"]["target"] = accuracy(model, ctx.test_loader(role), device)
        metrics["swa"] = {"averaged": int(trained.average.n_averaged), "acc_last_weights": last}
    else:
        model = trained
    if matching is not None:
        model = model.model  # the matching convolutions are not part of the released model
    model.set_trainable("full")
    ctx.save_released(model)
    ctx.ckpt.remove()
    return metrics


KIND = StageKind("renofeation", plan, run, releases_models=True, inputs=("pretrained",), schema=RenofeationConfig)
