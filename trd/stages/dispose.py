"""dispose: Disposable Transfer Learning (Koh et al., ICCV 2023) on a transferred model.

    L_DTL = (1 - lam) * L_retain + lam * L_unlearn

L_unlearn (on source batches): gc / ngc (gradient collision, trd.losses.gradient_collision), rand, unif,
neg. L_retain: src-kd (distil the frozen transferred model on source data, the paper's default),
tgt-kd, tgt-ce, or tgt-agem (target CE, with the unlearning gradient projected so that it never
increases the target loss to first order). Each method is its own stage, so a list of methods or a lam
sweep fans out into one job array that shares the transfer stage.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from trd.engine.cycle import cycle_from
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.losses import (
    RETAINING_LOSSES,
    UNLEARNING_LOSSES,
    agem_project,
    dtl_objective,
    frozen_teacher,
    gradient_collision_loss,
    retaining_loss,
    unlearning_loss,
)
from trd.models.io import load_model
from trd.models.source_view import WithSourceHead
from trd.plan import ConfigError, planner
from trd.stages.base import stage
from trd.stages.common import (build_test_loader, build_train_loader, common_config, load_source_head, make_engine,
                               released_model_path, role_config, save_outputs, train_config)

COLLISION = ("gc", "ngc")
UNLEARN = COLLISION + UNLEARNING_LOSSES
RETAIN = RETAINING_LOSSES + ("tgt-agem",)
DISPOSE_KEYS = ("methods", "retain", "lam", "temperature", "chunks", "target_batch_size", "chunking", "kd_head")
CHUNKINGS = ("random", "class")
KD_HEADS = ("source", "target")


@planner("dispose", releases_models=True)
def plan_dispose(cfg, plan) -> None:
    train_cfg = train_config(cfg, "dispose", extra_keys=DISPOSE_KEYS)
    methods = list(train_cfg.pop("methods"))
    if "transfer" not in plan:
        raise ConfigError("stage dispose needs transfer: put transfer before dispose in stages")
    unknown = [m for m in methods if m not in UNLEARN]
    if unknown or not methods:
        raise ConfigError(f"dispose.methods={methods}: use some of {', '.join(UNLEARN)}")
    if train_cfg["retain"] not in RETAIN:
        raise ConfigError(f"dispose.retain={train_cfg['retain']!r} is not known: use one of {', '.join(RETAIN)}")
    for key, allowed in (("chunking", CHUNKINGS), ("kd_head", KD_HEADS)):
        if train_cfg.setdefault(key, allowed[0]) not in allowed:
            raise ConfigError(f"dispose.{key}={train_cfg[key]!r} is not known: use one of {', '.join(allowed)}")
    world = common_config(cfg)["world_size"]
    per_rank = train_cfg["batch_size"] // world
    if train_cfg["batch_size"] % world or per_rank % int(train_cfg["chunks"]):
        raise ConfigError(f"dispose.batch_size={train_cfg['batch_size']} must split into {world} rank(s) x "
                          f"dispose.chunks={train_cfg['chunks']} equal chunks: use a multiple of "
                          f"{world * int(train_cfg['chunks'])}")
    if any(m in COLLISION for m in methods) and world * int(train_cfg["chunks"]) < 2:
        raise ConfigError("gradient collision needs at least 2 chunks in total: set dispose.chunks >= 2")
    base = {**common_config(cfg), "source": role_config(cfg, "source"), "target": role_config(cfg, "target")}
    for method in methods:
        plan.add(f"dispose/{method}", "dispose", {**base, "train": {**train_cfg, "method": method}},
                 inputs={"transferred": "transfer"}, labels=disposal_labels(method, train_cfg))


def disposal_labels(method: str, train_cfg: dict) -> dict:
    """What tells one disposed model from another in a report: the method, lam, the retaining loss, and the
    settings that change what those two losses are (chunks for the collision losses, the distilled head)."""
    labels = {"method": method, "lam": float(train_cfg["lam"]), "retain": train_cfg["retain"]}
    if method in COLLISION:
        labels.update(chunks=int(train_cfg["chunks"]), chunking=train_cfg["chunking"])
    if train_cfg["retain"] == "src-kd":
        labels["kd_head"] = train_cfg["kd_head"]
    return labels


def class_disjoint_order(x, y, num_classes: int, generator: torch.Generator):
    """The batch sorted by a fresh random order of the classes, so equal consecutive chunks hold (nearly)
    disjoint groups of classes.

    With random chunks E[g_m . g_n] = |grad L_source|^2, so GC is an estimate of the squared source gradient
    and descending it pulls towards the source optimum; with class-disjoint chunks the pair term rewards
    large, mutually cancelling per-class-group gradients instead (bench/README.md, GC disposal regime).
    """
    rank = torch.randperm(num_classes, generator=generator)[y.cpu()]
    order = torch.sort(rank, stable=True).indices.to(y.device)
    return x[order], y[order]


def _params(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class DisposalStep:
    """One optimisation step of L_DTL; keeps running sums of what TensorBoard shows per epoch."""

    def __init__(self, cfg: dict, teacher: WithSourceHead, target_batches, seed: int):
        self.cfg, self.teacher, self.target_batches = cfg, teacher, target_batches
        self.method, self.retain, self.lam = cfg["method"], cfg["retain"], float(cfg["lam"])
        self.generator = torch.Generator().manual_seed(seed)
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def _unlearn(self, module: WithSourceHead, x, y):
        if self.method in COLLISION and self.cfg.get("chunking", "random") == "class":
            x, y = class_disjoint_order(x, y, module.source_head.out_features, self.generator)
        if self.method in COLLISION:
            # The engine's gradient all-reduce (an average over ranks) completes GC's gradient, so a step
            # costs two parameter-sized all-reduces, as in the paper's Algorithm 1. A-GEM projects the
            # whole unlearning gradient itself, so it needs GC's own reduction.
            loss, stats = gradient_collision_loss(module.source, x, y, chunks=int(self.cfg["chunks"]),
                                                  normalized=self.method == "ngc", return_stats=True,
                                                  reduce_gradient=self.retain == "tgt-agem")
            return loss, stats.as_floats()
        return unlearning_loss(self.method, module.source(x), y, generator=self.generator), {}

    def _retain(self, module: WithSourceHead, x_source):
        if self.retain == "src-kd":
            # kd_head=target keeps what the released model says about source images, not the source task itself.
            view = (lambda m: m.source) if self.cfg.get("kd_head", "source") == "source" else (lambda m: m)
            with torch.no_grad():
                teacher_logits = view(self.teacher)(x_source)
            return retaining_loss("src-kd", view(module)(x_source), teacher_logits=teacher_logits,
                                  temperature=float(self.cfg["temperature"]))
        x_t, y_t = (t.to(x_source.device) for t in next(self.target_batches))
        if self.retain == "tgt-kd":
            with torch.no_grad():
                teacher_logits = self.teacher(x_t)
            return retaining_loss("tgt-kd", module(x_t), teacher_logits=teacher_logits,
                                  temperature=float(self.cfg["temperature"]))
        return retaining_loss("tgt-ce", module(x_t), targets=y_t)

    def __call__(self, engine, x, y, global_step):
        module: WithSourceHead = engine.module
        unlearn, stats = self._unlearn(module, x, y)
        retain = self._retain(module, x)
        loss = dtl_objective(retain, unlearn, self.lam)
        scalars = {"retain": float(retain.detach()), "unlearn": float(unlearn.detach()), **stats}
        for key, value in scalars.items():
            self.sums[key] += value
        self.count += 1
        if self.retain != "tgt-agem":
            return loss, scalars
        # A-GEM: the unlearning gradient loses its component against the target gradient; the engine then
        # receives the combined gradient through a surrogate whose gradient it is exactly.
        params = _params(module)
        g_retain = torch.autograd.grad(retain, params, allow_unused=True)
        g_unlearn = torch.autograd.grad(unlearn, params, allow_unused=True)
        zeros = [torch.zeros_like(p) for p in params]
        g_retain = [g if g is not None else z for g, z in zip(g_retain, zeros)]
        g_unlearn = [g if g is not None else z for g, z in zip(g_unlearn, zeros)]
        projected = agem_project(g_unlearn, g_retain)
        surrogate = sum(((1 - self.lam) * gr + self.lam * gu).mul(p).sum()
                        for p, gr, gu in zip(params, g_retain, projected))
        return surrogate, {**scalars, "loss": float(loss.detach())}

    def epoch_means(self) -> dict[str, float]:
        means = {f"loss/{k}": v / max(1, self.count) for k, v in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return means


@stage("dispose")
def run_dispose(ctx) -> dict:
    c = ctx.config
    cfg = c["train"]
    transferred = ctx.input("transferred")
    model = load_model(released_model_path(transferred), expected={"image_size": c["target"]["image_size"],
                                                                   "num_classes": c["target"]["num_classes"]})
    source_head = load_source_head(transferred, model.feature_dim, int(c["source"]["num_classes"]))
    if source_head is None:
        raise FileNotFoundError(f"{transferred} has no source_head.safetensors: dispose needs a model transferred "
                                f"from a pretrained one (transfer with init=pretrained)")
    module = WithSourceHead(model, source_head).to(ctx.device)
    teacher = frozen_teacher(module)

    source_loader = build_train_loader(ctx, c["source"], cfg["batch_size"])
    target_batches = None
    if cfg["retain"] != "src-kd":
        target_loader = build_train_loader(ctx, c["target"], cfg["target_batch_size"])
        progress = ctx.ckpt.progress() or {"global_step": 0}
        target_batches = cycle_from(target_loader, progress["global_step"])
    source_test, target_test = build_test_loader(ctx, c["source"]), build_test_loader(ctx, c["target"])
    engine = make_engine(ctx, module, cfg, source_loader.steps_per_epoch)
    step = DisposalStep(cfg, teacher, target_batches, seed=c["seed"] * 1000 + ctx.env.rank)

    def evaluate() -> dict:
        return {"source": accuracy(engine.module.source, source_test, ctx.device),
                "target": accuracy(engine.module, target_test, ctx.device)}

    def on_epoch_end(epoch: int) -> dict:
        return {**step.epoch_means(), **{f"acc/{k}": v for k, v in evaluate().items()}}

    progress = train(engine, source_loader, step, epochs=int(cfg["epochs"]), ckpt=ctx.ckpt, log=ctx.log,
                     env=ctx.env, seed=c["seed"], checkpoint_every=int(cfg.get("checkpoint_every", 0)),
                     on_epoch_end=on_epoch_end, desc=ctx.name)
    acc = evaluate()
    save_outputs(ctx, engine.module.model, source_head=engine.module.source_head)
    ctx.ckpt.remove()
    return {"acc": acc, "steps": progress["global_step"], "steps_per_epoch": source_loader.steps_per_epoch}
