"""piggyback: PL accuracy of a released model (Koh et al., Def. 3.3), the test accuracy an attacker reaches by
adapting the released weights to a task of their own.

One stage = one (released model, piggyback task, attacker scheme, seed). A scheme's learning rates form a
grid that runs inside the job, one point after another; every point starts from the same released weights
and the same new head, and has its own checkpoint and result under <stage dir>/grid/<point>/, so a requeued
job skips finished points and resumes the unfinished one mid-epoch.

acc_pl in metrics.json:
  final  test accuracy after the last epoch of the scheme's fixed point, its first learning rate
         (optim.lr[0]): what an attacker who runs the scheme as written gets (the paper's number when the
         scheme is piggyback.paper_scheme). null when that point diverged.
  best   the highest test accuracy over every grid point that did not diverge and every epoch: the attacker
         picks learning rate and stopping epoch on the test set itself. An upper bound on any attacker of this
         scheme, so the defender's honest worst case (best-of-grid).
A diverged point is recorded as diverged and left out of best, never counted as 0%; if every point
diverges the stage itself is diverged.

The scratch reference (method `scratch`) is the same architecture, randomly initialised, through the same
attacker: (Acc_pl(TL) - Acc_pl(X)) / (Acc_pl(TL) - Acc_pl(scratch)) is the disposal ratio of the reports.
"""
from __future__ import annotations

import gc
import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from trd.data.errors import DataError
from trd.engine.atomic import atomic_write_json, read_json
from trd.engine.checkpoint import CheckpointManager
from trd.engine.distributed import barrier
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.losses.finite import NonFiniteError
from trd.models import build_model, load_model, read_metadata
from trd.models.io import check_expected
from trd.plan import ConfigError, planner, take
from trd.stages.base import stage
from trd.stages.common import (OPTIM_KEYS, build_test_loader, build_train_loader, common_config, make_engine,
                               plain, released_model_path, role_config)

PIGGYBACK_KEYS = ("tasks", "seeds", "paper_scheme", "schemes", "models", "scratch")
SCHEME_KEYS = ("mode", "k", "epochs", "batch_size", "augment", "optim", "grad_clip", "checkpoint_every")
USER_MODEL_KEYS = ("path", "method")
MODES = ("full", "last_k", "linear")
OPTIMIZERS = ("sgd", "adam", "adamw")
# Labels of a PL stage that say which attack it is rather than which released model it attacks.
ATTACK_LABELS = ("released", "piggyback", "scheme", "seed", "fraction")


# ---------------------------------------------------------------- plan time

def parse_scheme(name: str, node) -> dict:
    """A scheme node checked into a plain dict whose optim.lr is a non-empty list of distinct positive floats."""
    where = f"piggyback.schemes.{name}"
    scheme = take(node, SCHEME_KEYS, where)
    for key in ("mode", "epochs", "batch_size", "optim"):
        if scheme.get(key) is None:
            raise ConfigError(f"{where}.{key} is missing: every scheme needs mode, epochs, batch_size and optim")
    mode, k = scheme["mode"], scheme.get("k")
    if mode not in MODES:
        raise ConfigError(f"{where}.mode={mode!r} is not known: use one of {', '.join(MODES)}")
    if mode == "last_k" and not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ConfigError(f"{where}.mode=last_k needs {where}.k >= 1 (got {k!r})")
    if mode != "last_k" and k is not None:
        raise ConfigError(f"{where}.k={k} only applies to mode=last_k: drop it or set mode=last_k")
    for key in ("epochs", "batch_size"):
        if not (isinstance(scheme[key], int) and scheme[key] >= 1):
            raise ConfigError(f"{where}.{key}={scheme[key]!r} must be an integer >= 1")
    optim = take(scheme["optim"], OPTIM_KEYS, f"{where}.optim")
    if str(optim.get("name")).lower() not in OPTIMIZERS:
        raise ConfigError(f"{where}.optim.name={optim.get('name')!r} is not known: use one of {', '.join(OPTIMIZERS)}")
    lrs = optim.get("lr")
    lrs = list(lrs) if isinstance(lrs, (list, tuple)) else [lrs]
    if not lrs or any(lr is None for lr in lrs):
        raise ConfigError(f"{where}.optim.lr is empty: give at least one learning rate, e.g. [0.01, 0.05]")
    if any(not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 for lr in lrs):
        raise ConfigError(f"{where}.optim.lr={lrs} must hold positive numbers")
    lrs = [float(lr) for lr in lrs]
    if len({point_name(lr) for lr in lrs}) != len(lrs):
        raise ConfigError(f"{where}.optim.lr={lrs} repeats a learning rate: list each once")
    optim["lr"] = lrs
    scheme.update(k=k, optim=optim, augment=bool(scheme.get("augment", True)))
    return scheme


def point_name(lr: float) -> str:
    return f"lr{lr:g}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_expectation(cfg) -> dict:
    model = plain(cfg["model"])
    return {"name": model["name"], "options": {k: v for k, v in model.items() if k != "name"}}


def _user_model(cfg, name: str, node, task_sizes: dict[str, int]) -> tuple[dict, dict]:
    """(config, labels) of a safetensors file to attack, checked against the model and target configs now."""
    where = f"piggyback.models.{name}"
    entry = take(node, USER_MODEL_KEYS, where) if not isinstance(node, str) else {"path": node}
    if not entry.get("path"):
        raise ConfigError(f"{where}.path is missing: give the path of the model's safetensors file")
    path = Path(str(entry["path"])).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{where}.path={path} does not exist: give the path of a model.safetensors file")
    try:
        metadata = read_metadata(path)
        expected = {**_model_expectation(cfg), "num_classes": int(cfg["data"]["target"]["num_classes"])}
        check_expected(metadata, expected, path)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}; attack it with a matching model= and data.target config") from None
    for task, size in task_sizes.items():
        if metadata["image_size"] != size:
            raise ConfigError(f"{where}: {path} takes image_size={metadata['image_size']} but "
                              f"data.piggyback.{task}.image_size={size}: set them equal (shards are resized on load)")
    return ({"init": "file", "path": str(path), "sha256": file_sha256(path)},
            {"method": str(entry.get("method") or name), "released": name})


def _tasks(cfg, names) -> dict[str, dict]:
    available = list((cfg["data"].get("piggyback") or {}).keys())
    if names is None:
        names = available
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ConfigError("no piggyback task: add one under data.piggyback (see configs/data/embedded.yaml)")
    tasks = {}
    for name in names:
        if name not in available:
            raise ConfigError(f"piggyback.tasks names {name!r}, which data.piggyback does not have: "
                              f"use some of {', '.join(available) or '(none configured)'}")
        tasks[name] = role_config(cfg, f"piggyback.{name}")
        _check_embedded_classes(tasks[name], f"data.piggyback.{name}")
    return tasks


def _check_embedded_classes(role: dict, where: str) -> None:
    """An embedded task's class count is known before any job runs; other data is checked when it is read."""
    from trd.data import EMBEDDED

    name = role.get("embedded")
    if name in EMBEDDED and EMBEDDED[name].num_classes != int(role["num_classes"]):
        raise ConfigError(f"{where}.num_classes={role['num_classes']} but its data ({name}) has "
                          f"{EMBEDDED[name].num_classes} classes: set {where}.num_classes={EMBEDDED[name].num_classes}")


def _seeds(seeds) -> list[int]:
    seeds = [seeds] if isinstance(seeds, int) else list(seeds or [])
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds):
        raise ConfigError(f"piggyback.seeds={seeds} must be a non-empty list of integers, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"piggyback.seeds={seeds} repeats a seed: list each once")
    return seeds


@planner("piggyback")
def plan_piggyback(cfg, plan) -> None:
    if "piggyback" not in cfg:
        raise ConfigError("stage piggyback needs a piggyback config section (see configs/config.yaml)")
    pb = take(cfg["piggyback"], PIGGYBACK_KEYS, "piggyback")
    tasks = _tasks(cfg, pb.get("tasks"))
    if not pb.get("schemes"):
        raise ConfigError("piggyback.schemes is empty: give at least one attacker scheme (configs/attack/)")
    schemes = {name: parse_scheme(name, node) for name, node in pb["schemes"].items()}
    paper = pb.get("paper_scheme")
    if paper not in schemes:
        raise ConfigError(f"piggyback.paper_scheme={paper!r} is not among piggyback.schemes: "
                          f"use one of {', '.join(schemes)}")
    seeds = _seeds(pb.get("seeds", [0]))
    sizes = {name: int(role["image_size"]) for name, role in tasks.items()}
    model_cfg = plain(cfg["model"])

    attacked: list[tuple[str, dict, dict, dict]] = []  # (name, model config, inputs, labels)
    source_size = int(role_config(cfg, "source")["image_size"])
    for task, size in sizes.items():
        if plan.released() and size != source_size:
            raise ConfigError(f"data.piggyback.{task}.image_size={size} differs from data.source.image_size="
                              f"{source_size}: the released models take {source_size}px images; set them equal")
    for released in plan.released():
        labels = {k: v for k, v in released.labels.items() if k not in ATTACK_LABELS}
        if "seed" in released.labels:
            labels["model_seed"] = released.labels["seed"]
        attacked.append((released.name, {"init": "released"}, {"model": released.name},
                         {**labels, "released": released.name}))
    for name, node in (pb.get("models") or {}).items():
        if name == "scratch" or name in plan:
            raise ConfigError(f"piggyback.models.{name} has the name of a stage or of the scratch reference: "
                              f"rename it")
        config, labels = _user_model(cfg, name, node, sizes)
        attacked.append((name, config, {}, labels))
    if pb.get("scratch", True):
        attacked.append(("scratch", {"init": "scratch"}, {}, {"method": "scratch", "released": "scratch"}))
    if not attacked:
        raise ConfigError("stage piggyback has no model to attack: put a releasing stage (transfer, ...) before "
                          "it in stages, or list files under piggyback.models")

    base = {**common_config(cfg), "model": model_cfg}
    for name, model, inputs, labels in attacked:
        for task, role in tasks.items():
            for scheme_name, scheme in schemes.items():
                for seed in seeds:
                    stage_labels = {**labels, "piggyback": task, "scheme": scheme_name, "seed": seed}
                    if role.get("fraction") is not None:
                        stage_labels["fraction"] = role["fraction"]
                    plan.add(f"piggyback/{name}/{task}/{scheme_name}/s{seed}", "piggyback", {
                        **base, "seed": seed, "attacked": model, "task_name": task,
                        "task": {**role, "augment": scheme["augment"]}, "scheme": scheme,
                    }, inputs=inputs, labels=stage_labels)


# ---------------------------------------------------------------- run time

def attacker_model(ctx) -> torch.nn.Module:
    """The released weights (or a random init) with a fresh head for the task; the same for every grid point."""
    c = ctx.config
    model_cfg, task, scheme = c["model"], c["task"], c["scheme"]
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    torch.manual_seed(c["seed"])
    attacked = c["attacked"]
    if attacked["init"] == "scratch":
        model = build_model(model_cfg["name"], num_classes=int(task["num_classes"]),
                            image_size=int(task["image_size"]), **options)
    else:
        if attacked["init"] == "file":
            path = Path(attacked["path"])
            if file_sha256(path) != attacked["sha256"]:
                raise ValueError(f"{path} changed since the experiment was planned: submit it again")
        else:
            path = released_model_path(ctx.input("model"))
        model = load_model(path, expected={"name": model_cfg["name"], "image_size": int(task["image_size"]),
                                           "options": options})
        model.replace_head(int(task["num_classes"]))
    model.set_trainable({"full": "all", "last_k": "last_k", "linear": "linear"}[scheme["mode"]], k=scheme["k"])
    return model


def frozen_modules(model, mode: str, k: int | None) -> list[torch.nn.Module]:
    """Parts an attacker does not train. They stay in eval mode too, so BatchNorm statistics of a frozen body
    keep the released values (requires_grad alone would still let them drift)."""
    if mode == "full":
        return []
    blocks = model.block_modules()
    return blocks + [model.neck] if mode == "linear" else blocks[:-k]


def run_point(ctx, lr: float, loader, test_loader) -> dict:
    c = ctx.config
    scheme, name = c["scheme"], point_name(lr)
    point_dir = ctx.dir / "grid" / name
    finished = read_json(point_dir / "result.json")
    if finished is not None:
        return finished
    model = attacker_model(ctx).to(ctx.device)
    frozen = frozen_modules(model, scheme["mode"], scheme["k"])
    train_cfg = {**scheme, "optim": {**scheme["optim"], "lr": lr}}
    engine = make_engine(ctx, model, train_cfg, loader.steps_per_epoch)
    ckpt = CheckpointManager(point_dir, ctx.env)
    # Epoch accuracies outlive a requeue: epochs before the last checkpoint are not recomputed on resume.
    curve: dict[str, float] = read_json(point_dir / "curve.json", default={})

    def step(engine, images, labels, global_step):
        for module in frozen:
            module.eval()
        return F.cross_entropy(engine(images), labels), {}

    def on_epoch_end(epoch: int) -> dict:
        curve[str(epoch)] = accuracy(engine.module, test_loader, ctx.device)
        if ctx.env.is_main:
            atomic_write_json(point_dir / "curve.json", curve)
        return {f"acc_pl/{name}": curve[str(epoch)]}

    epochs = int(scheme["epochs"])
    result = {"point": name, "lr": lr}
    try:
        progress = train(engine, loader, step, epochs=epochs, ckpt=ckpt, log=ctx.log, env=ctx.env, seed=c["seed"],
                         checkpoint_every=int(scheme.get("checkpoint_every") or 0), on_epoch_end=on_epoch_end,
                         desc=name)
        result.update(status="done", curve=[curve[str(e)] for e in range(1, epochs + 1)],
                      steps=progress["global_step"])
    except NonFiniteError as err:
        result.update(status="diverged", error=str(err),
                      curve=[curve[str(e)] for e in range(1, epochs + 1) if str(e) in curve])
    if ctx.env.is_main:
        atomic_write_json(point_dir / "result.json", result)
    barrier()
    ckpt.remove()
    del engine, model
    gc.collect()
    return result


def summarise(points: list[dict]) -> dict:
    """acc_pl from a grid's results (see the module docstring); points[0] is the fixed point."""
    usable = [p for p in points if p["status"] == "done"]
    if not usable:
        raise NonFiniteError("every grid point diverged: " + "; ".join(f"{p['point']}: {p['error']}" for p in points))
    best_acc, best_point, best_epoch = -math.inf, None, None
    for p in usable:
        for epoch, acc in enumerate(p["curve"], start=1):
            if acc > best_acc:
                best_acc, best_point, best_epoch = acc, p, epoch
    fixed = points[0]
    return {
        "acc_pl": {"final": fixed["curve"][-1] if fixed["status"] == "done" else None, "best": best_acc},
        "fixed_point": {"point": fixed["point"], "lr": fixed["lr"], "status": fixed["status"]},
        "best_point": {"point": best_point["point"], "lr": best_point["lr"], "epoch": best_epoch},
    }


@stage("piggyback")
def run_piggyback(ctx) -> dict:
    c = ctx.config
    scheme, task = c["scheme"], c["task"]
    try:
        loader = build_train_loader(ctx, task, int(scheme["batch_size"]))
        test_loader = build_test_loader(ctx, task)
    except DataError as err:  # name the config node: the shard error alone does not say which task it is
        raise DataError(f"data.piggyback.{c['task_name']}: {err}") from None
    points = [run_point(ctx, lr, loader, test_loader) for lr in scheme["optim"]["lr"]]
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
