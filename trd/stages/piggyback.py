"""piggyback: PL accuracy of every released model (Koh et al., Def. 3.3), the test accuracy an attacker reaches by
adapting the released weights to a task of their own (trd.attacks.piggyback).

One stage = one (released model, piggyback task, attacker scheme, seed). A scheme's learning rates form a grid
that runs inside the job (trd.engine.grid), each point from the same released weights and the same new head.
The scratch reference (method `scratch`) is the same architecture, randomly initialised, through the same
attacker: the denominator of the reports' disposal ratio. A stage whose file a finished stage already attacked with
the same attacker takes its results (trd.attacks.reuse).
"""
from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trd.atomic import file_sha256
from trd.attacks.grid_search import (
    extensions,
    initial_points,
    saturation,
    summarise,
    varying_axes,
)
from trd.attacks.piggyback import (
    AttackData,
    attack_point,
    attacker_model,
    evaluation_steps,
)
from trd.attacks.reuse import ATTACKED_SHA256, attacked_sha256, finished_twin
from trd.config import ConfigError, parse, plain
from trd.config.nodes import OptimConfig, check_trainable, common_config, model_config
from trd.config.schema import at_least, each, knob, positive, within
from trd.data.embedded import embedded_train_size
from trd.data.errors import DataError
from trd.data.role import sub_part
from trd.data.role_config import role_config
from trd.engine.distributed import broadcast
from trd.engine.grid import run_grid
from trd.models import read_metadata
from trd.models.io import check_expected
from trd.plan import StageKind


@dataclass
class SchemeOptimConfig(OptimConfig):
    lr: list[float] = knob(rule=each(positive()))  # the grid; the first is the scheme's fixed setting
    weight_decay: float | list[float] = knob(0.0, each(at_least(0)))  # a list is a grid axis


@dataclass
class ExtendConfig:
    """How far the grid follows its best point beyond its edges (trd.attacks.grid_search)."""
    lr_factor: float = knob(3.0, within(1, 100, low_open=True))  # the next learning rate beyond an edge
    lr_steps: int = knob(2, at_least(1))  # learning rates added at most per side
    lr_range: list[float] = knob([1.0e-5, 1.0], each(positive()))  # never beyond these
    budget_doublings: int = knob(1, at_least(1))  # times a best point at its last evaluation runs again at 2x


@dataclass
class SchemeConfig:
    mode: str  # full | last_k | linear (frozen body, new head)
    batch_size: int = knob(rule=at_least(1))  # no larger than the attacker's data (clamped to it)
    optim: SchemeOptimConfig = knob()
    steps: int | None = knob(None, at_least(1))  # the budget in optimiser steps...
    epochs: int | None = knob(None, at_least(1))  # ...or in epochs of the attacker's data
    evals: int = knob(10, at_least(1))  # evaluations spread over the budget, the last at its end
    k: int | None = knob(None, at_least(1))  # blocks trained with mode=last_k (plus neck and head)
    augment: bool | list[bool] = True  # random crop + flip of the training images; a list is a grid axis
    extend: ExtendConfig | None = knob(factory=ExtendConfig)  # null: the grid as written
    grad_clip: float = knob(0.0, at_least(0))
    checkpoint_every: int = knob(0, at_least(0))

    def check(self, where: str) -> None:
        check_trainable(self.mode, self.k, where)
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError(f"{where}: give the budget as {where}.steps (optimiser steps) or {where}.epochs, one "
                              f"of them (got steps={self.steps}, epochs={self.epochs})")
        lrs = self.optim.lr
        if not lrs:
            raise ConfigError(f"{where}.optim.lr is empty: give at least one learning rate, e.g. [0.01, 0.05]")
        self.optim.weight_decay = _as_list(self.optim.weight_decay)
        self.augment = _as_list(self.augment)
        for key, values in (("optim.lr", lrs), ("optim.weight_decay", self.optim.weight_decay),
                            ("augment", self.augment)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{where}.{key}={values} repeats a value: list each once")
        if self.extend is not None:
            low, high = self.extend.lr_range if len(self.extend.lr_range) == 2 else (1, 0)
            if not low < high:
                raise ConfigError(f"{where}.extend.lr_range={self.extend.lr_range} must be [low, high] with low < high")


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


@dataclass
class UserModel:
    path: str
    method: str | None = None


@dataclass
class PiggybackConfig:
    schemes: dict[str, SchemeConfig]
    paper_scheme: str
    tasks: list[str] | None = None  # names under data.piggyback; null: all of them
    seeds: list[int] = knob([0])  # attacker seeds: one stage each; reports take the worst case over them
    fractions: list[float] | None = knob(None, each(within(0, 1, low_open=True)))  # data amounts: one task each
    val_fraction: float = knob(0.2, within(0, 1, high_open=True))  # the honest attacker's validation slice
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
        for key, values in (("seeds", self.seeds), ("fractions", self.fractions or [])):
            if len(set(values)) != len(values):
                raise ConfigError(f"{where}.{key}={values} repeats a value: list each once")


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


def _tasks(cfg, names, fractions: list[float] | None) -> dict[str, dict]:
    """Each named task, or with piggyback.fractions each task at each data amount (name@fraction)."""
    available = list((cfg["data"].get("piggyback") or {}).keys())
    names = available if names is None else names
    if not names:
        raise ConfigError("no piggyback task: add one under data.piggyback (see configs/data/embedded.yaml)")
    tasks = {}
    for name in names:
        if name not in available:
            raise ConfigError(f"piggyback.tasks names {name!r}, which data.piggyback does not have: "
                              f"use some of {', '.join(available) or '(none configured)'}")
        role = role_config(cfg, f"piggyback.{name}")
        if fractions is None:
            tasks[name] = role
        for fraction in fractions or []:
            tasks[f"{name}@{fraction:g}"] = {**role, "fraction": fraction}
    return tasks


def _attacker_split(role: dict, val_fraction: float, where: str) -> tuple[dict, dict | None]:
    """The attacker's training slice of a task's train split and its validation slice (None without one)."""
    if not val_fraction:
        return role, None
    train = {**role, "part": sub_part(role.get("part"), [0.0, 1.0 - val_fraction])}
    val = {**role, "part": sub_part(role.get("part"), [1.0 - val_fraction, 1.0]), "augment": False}
    size = embedded_train_size(role)
    if size is not None and int(size * (1.0 - val_fraction)) < 1:
        raise ConfigError(f"piggyback.val_fraction={val_fraction} leaves none of the {size} training images of "
                          f"{where} to train on: lower it")
    return train, val


def plan(cfg, plan) -> None:
    pb = parse(cfg.get("piggyback"), PiggybackConfig, "piggyback")
    tasks = _tasks(cfg, pb.tasks, pb.fractions)
    source_size = role_config(cfg, "source")["image_size"]
    model, blocks = model_config(cfg, source_size)
    for name, scheme in pb.schemes.items():
        check_trainable(scheme.mode, scheme.k, f"piggyback.schemes.{name}", blocks)
    splits = {task: _attacker_split(role, pb.val_fraction, f"data.piggyback.{task.split('@')[0]}")
              for task, role in tasks.items()}
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
            train_role, val_role = splits[task]
            for scheme_name, scheme in pb.schemes.items():
                for seed in pb.seeds:
                    attack = {"attacks": name, "task": task, "scheme": scheme_name, "seed": seed}
                    if role.get("fraction") is not None:
                        attack["fraction"] = role["fraction"]
                    plan.add(f"piggyback/{name}/{task}/{scheme_name}/s{seed}", "piggyback", {
                        **base, "seed": seed, "attacked": init, "task_name": task.split("@")[0],
                        "task": train_role, "val_task": val_role, "scheme": plain(scheme),
                    }, inputs=inputs, model=labels, attack=attack)


def _attack_data(ctx, scheme: dict, task: dict, val_task: dict | None) -> tuple[AttackData, int]:
    """The attacker's loaders, with its batch no larger than its data (a multiple of the ranks)."""
    world = ctx.env.world_size
    first = ctx.train_loader({**task, "augment": False}, int(scheme["batch_size"]))
    samples = first.num_samples
    batch = min(int(scheme["batch_size"]), max(world, samples - samples % world))
    loaders: dict[bool, object] = {}

    def train_batches(augment: bool):
        if augment not in loaders:
            loaders[augment] = ctx.train_loader({**task, "augment": augment}, batch)
        return loaders[augment]

    fit = ctx.eval_loader({**task, "augment": False}, "train")
    val = ctx.eval_loader(val_task, "train") if val_task is not None else None
    return AttackData(train_batches, ctx.eval_loader(task, "test"), val, fit), batch


def _look_for_twin(ctx) -> tuple[str | None, tuple[Path, dict] | None]:
    """(sha256 of the attacked file, a finished stage's attack on the same bytes or None)."""
    try:
        digest = attacked_sha256(ctx.config, ctx.inputs)
    except OSError:
        return None, None  # the attack itself says what is wrong with its file
    planned = ctx.config["attacked"].get("sha256")
    if digest is None or (planned is not None and digest != planned):
        return digest, None  # a user file changed since planning: attacker_model refuses it
    return digest, finished_twin(ctx.dir, KIND.version, ctx.config, digest)


def run(ctx) -> dict:
    c = ctx.config
    # Rank 0 looks for every rank: a twin finishing between two ranks' looks must not split the world.
    digest, twin = broadcast([_look_for_twin(ctx) if ctx.env.is_main else None])[0]
    if twin is not None:
        other, results = twin
        if ctx.env.is_main:
            shutil.rmtree(ctx.dir / "grid", ignore_errors=True)  # a requeued stage's half-run grid
            print(f"trd: {ctx.name}: {other} attacked the same file with the same attacker; its results are taken",
                  file=sys.stderr, flush=True)
        return results
    scheme, task = c["scheme"], c["task"]
    try:
        data, batch = _attack_data(ctx, scheme, task, c.get("val_task"))
    except DataError as err:  # name the config node: the shard error alone does not say which task it is
        raise DataError(f"data.piggyback.{c['task_name']}: {err}") from None
    steps_per_epoch = data.train(False).steps_per_epoch
    base_budget = int(scheme["steps"] or scheme["epochs"] * steps_per_epoch)
    released_dir = ctx.inputs.get("model")
    lrs, wds_, augments = scheme["optim"]["lr"], scheme["optim"]["weight_decay"], scheme["augment"]
    vary = varying_axes(wds_, augments)

    def run_point(point: dict, point_dir: Path) -> dict:
        model = attacker_model(c["model"], c["attacked"], task, scheme["mode"], scheme["k"], c["seed"], released_dir)
        budget = base_budget * point["budget_factor"]
        run_cfg = {**scheme, "batch_size": batch, "augment": point["augment"], "budget": budget,
                   "eval_steps": evaluation_steps(budget, int(scheme["evals"])),
                   "optim": {**scheme["optim"], "lr": point["lr"], "weight_decay": point["weight_decay"]}}
        return attack_point(ctx, model, run_cfg, data, point_dir)

    # One standard error of a test accuracy (at its widest, p = 0.5): gains below it are noise.
    tolerance = 0.5 / math.sqrt(data.test.num_samples)
    points = [p.as_dict(vary) for p in initial_points(lrs, wds_, augments)]
    added: list[dict] = []
    while True:
        results = run_grid(ctx.dir / "grid", ctx.env, points, run_point,
                           on_point=lambda n, of, point: ctx.log.live.note(point=n, points=of, at=point["point"]))
        new = extensions(results, lrs, scheme["extend"], tolerance)
        if not new:
            break
        for point, reason in new:
            points.append(point.as_dict(vary))
            added.append({"point": point.name(vary), "reason": reason})
    summary = summarise(results)
    for p in results:
        done = p["status"] == "done" and p["curve"]
        ctx.log.hparams({"mode": scheme["mode"], "k": scheme["k"], "optim": scheme["optim"]["name"], "lr": p["lr"],
                         "weight_decay": p["weight_decay"], "augment": p["augment"], "budget": base_budget *
                         p["budget_factor"], "batch_size": batch, "seed": c["seed"]},
                        {"hparam/acc_final": p["curve"][-1] if done else None,
                         "hparam/acc_best": max(p["curve"]) if done else None}, run=p["point"])
    return {
        **summary,
        ATTACKED_SHA256: digest,
        "saturation": {**saturation(results, scheme["extend"], tolerance), "extensions": added,
                       "tolerance": tolerance},
        "acc": {"piggyback": summary["acc_pl"]["final"]},
        "grid": results,
        "grid_points": len(results),
        "attacker": scheme,
        "batch_size": batch,
        "budget": base_budget,
        "chance": 1.0 / int(task["num_classes"]),
        "train_samples": data.fit.num_samples,
        "val_samples": data.val.num_samples if data.val is not None else 0,
        "test_samples": data.test.num_samples,
        "steps_per_epoch": steps_per_epoch,
    }


KIND = StageKind("piggyback", plan, run, version=2, reported=True, inputs=("model",),
                 attack_labels=("attacks", "task", "scheme", "seed", "fraction"), schema=PiggybackConfig)
