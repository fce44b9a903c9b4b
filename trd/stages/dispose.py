"""dispose: Disposable Transfer Learning on a released model (trd.losses.disposal_step). Each method is its own
stage, so a list of methods or a lam sweep fans out into one job array that shares the disposed model. With a
target budget the stage validates on the target's held-out slice and releases the latest state within it
(trd.engine.target_budget)."""
from __future__ import annotations

from dataclasses import dataclass

from trd.config import ConfigError, parse, plain
from trd.config.nodes import TrainConfig, common_config
from trd.config.schema import at_least, each, knob, one_of, positive, within
from trd.data.role import validation_role
from trd.data.role_config import role_config
from trd.engine.cycle import SideStream, cycle_from
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.engine.target_budget import ON_EXCEED, TargetBudget
from trd.losses import frozen_teacher
from trd.losses.disposal_step import (
    CHUNKINGS,
    COLLISION,
    KD_HEADS,
    RETAIN,
    SIMULATED,
    UNLEARN,
    DisposalStep,
    attacker_distribution,
)
from trd.losses.gradient_collision import HVPS
from trd.losses.resistance import RESISTANCE_LOSSES
from trd.meta.simulated_attack import HEADS as ATTACKER_HEADS
from trd.meta.simulated_attack import OPTIMIZERS as ATTACKER_OPTIMIZERS
from trd.models.release import load_released, load_source_head
from trd.models.source_view import WithSourceHead
from trd.plan import StageKind


@dataclass
class SimulatedAttackersConfig:
    """nft's attackers: each outer step samples one per rank (trd.meta.simulated_attack)."""
    loss: str = knob("inverse-ce", one_of(*RESISTANCE_LOSSES))  # what the fine-tuned source model is scored by
    optimizers: list[str] = knob(["momentum", "adam"], each(one_of(*ATTACKER_OPTIMIZERS)))  # chosen uniformly
    momentum_lr: list[float] = knob([0.03, 0.3], each(positive()))  # [low, high], log-uniform
    adam_lr: list[float] = knob([1.0e-3, 3.0e-2], each(positive()))
    steps: list[int] = knob([8, 32], each(at_least(1)))  # inner steps, uniform in [low, high]
    linear_share: float = knob(0.5, within(0, 1))  # linear probes among the attackers (the rest fine-tune all)
    second_order_steps: int = knob(1, at_least(0))  # loops this short are differentiated second-order
    momentum: float = knob(0.9, within(0, 1, high_open=True))
    head: str = knob("random", one_of(*ATTACKER_HEADS))  # each attacker's fresh head: random, or class means
    batch_size: int = knob(32, at_least(1))  # the attacker's source batch, all ranks together

    def check(self, where: str) -> None:
        for key in ("momentum_lr", "adam_lr", "steps"):
            if len(getattr(self, key)) != 2:
                raise ConfigError(f"{where}.{key}={getattr(self, key)} must be [low, high]")
        try:
            attacker_distribution(plain(self))
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None


@dataclass
class DisposeConfig(TrainConfig):
    methods: list[str] = knob(["gc"], each(one_of(*UNLEARN)))  # one disposal stage each
    retain: str = knob("src-kd", one_of(*RETAIN))
    lam: float = knob(0.5, within(0, 1))  # (1 - lam) * L_retain + lam * L_unlearn
    temperature: float = knob(4.0, positive())  # of the KD retaining losses
    chunks: int = knob(4, at_least(1))  # gradient-collision chunks per rank (c = chunks x ranks)
    chunking: str = knob("random", one_of(*CHUNKINGS))
    kd_head: str = knob("source", one_of(*KD_HEADS))
    # src-kd with gc/ngc: the KD term takes its logits from GC's own forward (chunk-wise batch-norm statistics)
    # and joins GC's backward, one forward instead of two; false: its own forward, whole-batch statistics.
    fused: bool = True
    hvp: str = knob("exact", one_of(*HVPS))  # gc/ngc's Hessian-vector products: exact, or finite differences
    fd_scale: float = knob(0.1, positive())  # hvp=finite_difference: step = fd_scale * sqrt(eps)(1 + |w|) / |v|
    target_batch_size: int = knob(32, at_least(1))  # target batch of the tgt-* retaining losses
    target_budget: float | None = knob(2.0, within(0, 100))  # target points (validation slice) to lose at most
    validate_every: int = knob(50, at_least(1))  # optimiser steps between validations of the budget
    on_exceed: str = knob("stop", one_of(*ON_EXCEED))  # a validation outside the budget stops, or lowers the lr
    lr_factor: float = knob(0.5, within(0, 1, low_open=True, high_open=True))  # on_exceed=lower_lr: lr *= this
    max_lowerings: int = knob(2, at_least(0))  # on_exceed=lower_lr: then it stops
    patience: int = knob(1, at_least(1))  # validations in a row outside the budget before on_exceed acts
    nft: SimulatedAttackersConfig = knob(factory=SimulatedAttackersConfig)
    input: str = "transfer"  # the released stage to dispose: transfer, or another family's released model

    def check(self, where: str) -> None:
        if not self.methods:
            raise ConfigError(f"{where}.methods is empty: use some of {', '.join(UNLEARN)}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"{where}.methods={self.methods} repeats a method: list each once")


def plan(cfg, plan) -> None:
    dispose = parse(cfg["dispose"], DisposeConfig, "dispose")
    released = {s.name: s for s in plan.released()}
    if dispose.input not in released:
        raise ConfigError(f"dispose.input={dispose.input!r} is not a released model of this plan: use one of "
                          f"{', '.join(released) or '(none: put transfer before dispose in stages)'}")
    common = common_config(cfg)
    world = common["world_size"]
    if dispose.hvp == "finite_difference" and common["deepspeed"]["precision"] == "bf16":
        raise ConfigError("dispose.hvp=finite_difference needs float32 weights, not deepspeed.precision=bf16: set "
                          "deepspeed.precision=fp32, or dispose.hvp=exact")
    per_rank, uneven = divmod(dispose.batch_size, world)
    if uneven or per_rank % dispose.chunks:
        raise ConfigError(f"dispose.batch_size={dispose.batch_size} must split into {world} rank(s) x "
                          f"dispose.chunks={dispose.chunks} equal chunks: use a multiple of {world * dispose.chunks}")
    if any(m in COLLISION for m in dispose.methods) and world * dispose.chunks < 2:
        raise ConfigError("dispose.chunks=1 on 1 rank: gradient collision needs at least 2 chunks in total: "
                          "set dispose.chunks >= 2")
    target = role_config(cfg, "target")
    if dispose.target_budget is not None and not target.get("holdout"):
        raise ConfigError(f"dispose.target_budget={dispose.target_budget:g} needs a validation slice of the target's "
                          f"train split: set data.target.holdout (e.g. 0.1), or dispose.target_budget=null to "
                          f"release the last step")
    train_cfg = plain(dispose)
    methods = train_cfg.pop("methods")
    source_of = train_cfg.pop("input")
    nft = train_cfg.pop("nft")
    base = {**common_config(cfg), "source": role_config(cfg, "source"), "target": target}
    for method in methods:
        # Each stage carries only what its method reads, so changing nft's attackers reruns nft alone.
        node = {**train_cfg, "method": method, **({"nft": nft} if method in SIMULATED else {})}
        plan.add(f"dispose/{method}", "dispose", {**base, "train": node},
                 inputs={"released": source_of}, model=disposal_labels(method, node, released[source_of]))


def disposal_labels(method: str, train_cfg: dict, disposed) -> dict:
    """What tells one disposed model from another in a report: the method, lam, the retaining loss, the settings
    that change what those two losses are (chunks for the collision losses, the distilled head), and the model
    it disposed when that is not TL."""
    labels = {"method": method, "lam": float(train_cfg["lam"]), "retain": train_cfg["retain"]}
    if method in COLLISION:
        labels.update(chunks=int(train_cfg["chunks"]), chunking=train_cfg["chunking"])
        if train_cfg.get("hvp", "exact") != "exact":
            labels["hvp"] = train_cfg["hvp"]
    if method in SIMULATED:
        labels["resist"] = train_cfg["nft"]["loss"]
    if train_cfg["retain"] == "src-kd":
        labels["kd_head"] = train_cfg["kd_head"]
        if method in COLLISION and not train_cfg.get("fused", True):
            labels["fused"] = False
    if disposed.model.get("method") != "tl":
        labels["disposes"] = disposed.model.get("method")
    return labels


def run(ctx) -> dict:
    c = ctx.config
    cfg = c["train"]
    released = ctx.input("released")
    model = load_released(released, expected={"image_size": c["target"]["image_size"],
                                              "num_classes": c["target"]["num_classes"]})
    source_head = load_source_head(released, model.feature_dim, int(c["source"]["num_classes"]))
    if source_head is None:
        raise FileNotFoundError(f"{released} has no source_head.safetensors: dispose needs a model transferred "
                                f"from a pretrained one (transfer with init=pretrained)")
    module = WithSourceHead(model, source_head).to(ctx.device)
    teacher = frozen_teacher(module)

    source_loader = ctx.train_loader(c["source"], cfg["batch_size"])
    target_batches = None
    if cfg["retain"] != "src-kd":
        target_loader = ctx.train_loader(c["target"], cfg["target_batch_size"])
        target_batches = lambda global_step: cycle_from(target_loader, global_step)  # noqa: E731
    attacker_batches = None
    if cfg["method"] in SIMULATED:
        attacker_batches = SideStream(ctx.train_loader(c["source"], cfg["nft"]["batch_size"]),
                                      per_step=int(cfg["nft"]["steps"][1]))
    source_test, target_test = ctx.test_loader(c["source"]), ctx.test_loader(c["target"])
    engine = ctx.engine(module, cfg, source_loader.steps_per_epoch)
    step = DisposalStep(cfg, teacher, target_batches, seed=c["seed"] * 1000 + ctx.env.rank,
                        attacker_batches=attacker_batches)
    budget = _target_budget(ctx, engine) if cfg.get("target_budget") is not None else None
    total = int(cfg["epochs"]) * source_loader.steps_per_epoch

    def evaluate() -> dict:
        return {"source": accuracy(engine.module.source, source_test, ctx.device),
                "target": accuracy(engine.module, target_test, ctx.device)}

    def on_epoch_end(epoch: int) -> dict:
        return {**step.epoch_means(), **{f"acc/{k}": v for k, v in evaluate().items()}}

    every = int(cfg["validate_every"])
    progress = train(engine, source_loader, step, epochs=int(cfg["epochs"]), ckpt=ctx.ckpt, log=ctx.log,
                     env=ctx.env, seed=c["seed"], checkpoint_every=int(cfg.get("checkpoint_every", 0)),
                     on_epoch_end=on_epoch_end, desc=ctx.name,
                     evaluate_at=set(range(every, total + 1, every)) | {total} if budget else (),
                     on_evaluate=budget and budget.validate, on_start=budget and budget.resume,
                     stop=budget and budget.stopped)
    extra = {}
    if budget is not None:
        budget.restore_within()
        extra = {"target_budget": budget.summary()}
    if step.attackers is not None:
        extra["simulated_attackers"] = step.attackers.summary()
    acc = evaluate()
    ctx.save_released(engine.module.model, source_head=engine.module.source_head)
    ctx.ckpt.remove()
    return {"acc": acc, "steps": progress["global_step"], "steps_per_epoch": source_loader.steps_per_epoch, **extra}


def _target_budget(ctx, engine) -> TargetBudget:
    """The budget of this stage, its reference (the model as handed over) validated before the first step."""
    cfg = ctx.config["train"]
    budget = TargetBudget(ctx.dir, cfg["target_budget"], cfg["on_exceed"], cfg["lr_factor"], cfg["max_lowerings"],
                          cfg["patience"], is_main=ctx.env.is_main)
    validation = ctx.eval_loader(validation_role(ctx.config["target"]), "train")
    budget.bind(engine, measure=lambda: accuracy(engine.module, validation, ctx.device))
    if not budget.history:
        budget.validate(0)
    return budget


KIND = StageKind("dispose", plan, run, releases_models=True, inputs=("released",), schema=DisposeConfig)
