"""piggyback: PL accuracy of every released model (Koh et al., Def. 3.3), the test accuracy an attacker reaches by
adapting the released weights to a task of their own (trd.attacks.piggyback).

One stage = one (released model, piggyback task, attacker scheme, seed). A scheme's learning rates form a grid
that runs inside the job (trd.engine.grid), each point from the same released weights and the same new head.
The scratch reference (method `scratch`) is the same architecture, randomly initialised, through the same
attacker: the denominator of the reports' disposal ratio.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trd.attacks.piggyback import attack_point, attacker_model, file_sha256, summarise
from trd.config import ConfigError, parse, plain
from trd.config.nodes import OptimConfig, check_trainable, common_config, model_config
from trd.config.schema import at_least, each, knob, positive
from trd.data.errors import DataError
from trd.data.role_config import role_config
from trd.engine.grid import run_grid
from trd.models import read_metadata
from trd.models.io import check_expected
from trd.plan import StageKind


@dataclass
class SchemeOptimConfig(OptimConfig):
    lr: list[float] = knob(rule=each(positive()))  # the first is the scheme's fixed point, the rest its grid


@dataclass
class SchemeConfig:
    mode: str  # full | last_k | linear (frozen body, new head)
    epochs: int = knob(rule=at_least(1))
    batch_size: int = knob(rule=at_least(1))
    optim: SchemeOptimConfig = knob()
    k: int | None = knob(None, at_least(1))  # blocks trained with mode=last_k (plus neck and head)
    augment: bool = True  # random crop + flip of the piggyback training images
    grad_clip: float = knob(0.0, at_least(0))
    checkpoint_every: int = knob(0, at_least(0))

    def check(self, where: str) -> None:
        check_trainable(self.mode, self.k, where)
        lrs = self.optim.lr
        if not lrs:
            raise ConfigError(f"{where}.optim.lr is empty: give at least one learning rate, e.g. [0.01, 0.05]")
        if len({point_name(lr) for lr in lrs}) != len(lrs):
            raise ConfigError(f"{where}.optim.lr={lrs} repeats a learning rate: list each once")


@dataclass
class UserModel:
    path: str
    method: str | None = None


@dataclass
class PiggybackConfig:
    schemes: dict[str, SchemeConfig]
    paper_scheme: str
    tasks: list[str] | None = None  # names under data.piggyback; null: all of them
    seeds: list[int] = knob([0])  # one PL stage per seed; reports give mean +- std over them
    scratch: bool = True  # also attack a randomly initialised model: the reference of the disposal ratio
    models: dict[str, Any] = knob({})  # extra files to attack: name -> {path: model.safetensors, method: label}

    def check(self, where: str) -> None:
        if not self.schemes:
            raise ConfigError(f"{where}.schemes is empty: give at least one attacker scheme (configs/attack/)")
        if self.paper_scheme not in self.schemes:
            raise ConfigError(f"{where}.paper_scheme={self.paper_scheme!r} is not among {where}.schemes: "
                              f"use one of {', '.join(self.schemes)}")
        if not self.seeds:
            raise ConfigError(f"{where}.seeds={self.seeds} must be a non-empty list of integers, e.g. [0, 1, 2]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{where}.seeds={self.seeds} repeats a seed: list each once")


def point_name(lr: float) -> str:
    return f"lr{lr:g}"


def _user_model(name: str, node, model: dict, num_classes: int, task_sizes: dict[str, int]) -> tuple[dict, dict]:
    """(config, labels) of a safetensors file to attack, checked against the model and target configs now."""
    where = f"piggyback.models.{name}"
    entry = parse({"path": node} if isinstance(node, str) else node, UserModel, where)
    path = Path(entry.path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{where}.path={path} does not exist: give the path of a model.safetensors file")
    try:
        metadata = read_metadata(path)
        check_expected(metadata, {"name": model["name"], "num_classes": num_classes,
                                  "options": {k: v for k, v in model.items() if k != "name"}}, path)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}; attack it with a matching model= and data.target config") from None
    for task, size in task_sizes.items():
        if metadata["image_size"] != size:
            raise ConfigError(f"{where}: {path} takes image_size={metadata['image_size']} but "
                              f"data.piggyback.{task}.image_size={size}: set them equal (shards are resized on load)")
    return {"init": "file", "path": str(path), "sha256": file_sha256(path)}, {"method": entry.method or name}


def _tasks(cfg, names) -> dict[str, dict]:
    available = list((cfg["data"].get("piggyback") or {}).keys())
    names = available if names is None else names
    if not names:
        raise ConfigError("no piggyback task: add one under data.piggyback (see configs/data/embedded.yaml)")
    for name in names:
        if name not in available:
            raise ConfigError(f"piggyback.tasks names {name!r}, which data.piggyback does not have: "
                              f"use some of {', '.join(available) or '(none configured)'}")
    return {name: role_config(cfg, f"piggyback.{name}") for name in names}


def plan(cfg, plan) -> None:
    pb = parse(cfg.get("piggyback"), PiggybackConfig, "piggyback")
    tasks = _tasks(cfg, pb.tasks)
    source_size = role_config(cfg, "source")["image_size"]
    model, blocks = model_config(cfg, source_size)
    for name, scheme in pb.schemes.items():
        check_trainable(scheme.mode, scheme.k, f"piggyback.schemes.{name}", blocks)
    sizes = {name: int(role["image_size"]) for name, role in tasks.items()}
    for task, size in sizes.items():
        if plan.released() and size != source_size:
            raise ConfigError(f"data.piggyback.{task}.image_size={size} differs from data.source.image_size="
                              f"{source_size}: the released models take {source_size}px images; set them equal")

    attacked: list[tuple[str, dict, dict, dict]] = []  # (name, model init, inputs, model labels)
    for released in plan.released():
        attacked.append((released.name, {"init": "released"}, {"model": released.name}, released.model))
    for name, node in pb.models.items():
        if name == "scratch" or name in plan:
            raise ConfigError(f"piggyback.models.{name} has the name of a stage or of the scratch reference: "
                              f"rename it")
        init, labels = _user_model(name, node, model, int(cfg["data"]["target"]["num_classes"]), sizes)
        attacked.append((name, init, {}, labels))
    if pb.scratch:
        attacked.append(("scratch", {"init": "scratch"}, {}, {"method": "scratch"}))
    if not attacked:
        raise ConfigError("stage piggyback has no model to attack: put a releasing stage (transfer, ...) before "
                          "it in stages, or list files under piggyback.models")

    base = {**common_config(cfg), "model": model}
    for name, init, inputs, labels in attacked:
        for task, role in tasks.items():
            for scheme_name, scheme in pb.schemes.items():
                for seed in pb.seeds:
                    attack = {"attacks": name, "task": task, "scheme": scheme_name, "seed": seed}
                    if role.get("fraction") is not None:
                        attack["fraction"] = role["fraction"]
                    plan.add(f"piggyback/{name}/{task}/{scheme_name}/s{seed}", "piggyback", {
                        **base, "seed": seed, "attacked": init, "task_name": task,
                        "task": {**role, "augment": scheme.augment}, "scheme": plain(scheme),
                    }, inputs=inputs, model=labels, attack=attack)


def run(ctx) -> dict:
    c = ctx.config
    scheme, task = c["scheme"], c["task"]
    try:
        loader = ctx.train_loader(task, int(scheme["batch_size"]))
        test_loader = ctx.test_loader(task)
    except DataError as err:  # name the config node: the shard error alone does not say which task it is
        raise DataError(f"data.piggyback.{c['task_name']}: {err}") from None
    released_dir = ctx.inputs.get("model")

    def run_point(point: dict, point_dir: Path) -> dict:
        model = attacker_model(c["model"], c["attacked"], task, scheme["mode"], scheme["k"], c["seed"], released_dir)
        train_cfg = {**scheme, "optim": {**scheme["optim"], "lr": point["lr"]}}
        return attack_point(ctx, model, train_cfg, loader, test_loader, point_dir)

    points = run_grid(ctx.dir / "grid", ctx.env, [{"point": point_name(lr), "lr": lr} for lr in scheme["optim"]["lr"]],
                      run_point)
    summary = summarise(points)
    hparams = {"mode": scheme["mode"], "k": scheme["k"], "optim": scheme["optim"]["name"],
               "epochs": scheme["epochs"], "batch_size": scheme["batch_size"], "augment": scheme["augment"],
               "weight_decay": float(scheme["optim"].get("weight_decay", 0.0)), "seed": c["seed"]}
    for p in points:
        results = {"hparam/acc_final": p["curve"][-1] if p["status"] == "done" and p["curve"] else None,
                   "hparam/acc_best": max(p["curve"]) if p["status"] == "done" and p["curve"] else None}
        ctx.log.hparams({**hparams, "lr": p["lr"]}, results, run=p["point"])
    return {
        **summary,
        "acc": {"piggyback": summary["acc_pl"]["final"]},
        "grid": points,
        "attacker": scheme,
        "chance": 1.0 / int(task["num_classes"]),
        "train_samples": loader.num_samples,
        "steps_per_epoch": loader.steps_per_epoch,
    }


KIND = StageKind("piggyback", plan, run, reported=True, inputs=("model",),
                 attack_labels=("attacks", "task", "scheme", "seed", "fraction"), schema=PiggybackConfig)
