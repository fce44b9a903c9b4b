"""The piggyback attacker (Koh et al., Def. 3.3): a free-rider who adapts released weights, with a new head, to
a task of their own, at one point of their settings (learning rate, ...), evaluated after every epoch.

One run (`attack_point`) starts from the released weights (or a random init: the scratch reference) and the
same new head at every point of the attacker's grid (trd.attacks.grid_search), and trains for a budget of
optimiser steps with test and validation accuracy at evaluation points spread over it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from trd.atomic import atomic_write_json, file_sha256, read_json
from trd.engine.checkpoint import CheckpointManager
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.losses.finite import NonFiniteError
from trd.models.io import load_model
from trd.models.registry import build_from_config
from trd.models.release import released_model_path

CURVE_FILE = "curve.json"


def attacked_path(attacked: dict, released_dir: Path | str | None) -> Path | None:
    """The safetensors file an attack starts from: a user's file (attacked["init"] = file) or the released stage's
    model (released; FileNotFoundError until that stage has written it); None for a random init (scratch)."""
    if attacked["init"] == "scratch":
        return None
    return Path(attacked["path"]) if attacked["init"] == "file" else released_model_path(released_dir)


def attacker_model(model_cfg: dict, attacked: dict, task: dict, mode: str, k: int | None, seed: int,
                   released_dir: Path | None) -> torch.nn.Module:
    """The released weights (attacked["init"] = released | file) or a random init (scratch), with a fresh head
    for the task and mode's parameters trainable; the same for every point of one seed."""
    torch.manual_seed(seed)
    num_classes, image_size = int(task["num_classes"]), int(task["image_size"])
    path = attacked_path(attacked, released_dir)
    if path is None:
        model = build_from_config(model_cfg, num_classes, image_size)
    else:
        if attacked["init"] == "file" and file_sha256(path) != attacked["sha256"]:
            raise ValueError(f"{path} changed since the experiment was planned: submit it again")
        options = {key: value for key, value in model_cfg.items() if key != "name"}
        model = load_model(path, expected={"name": model_cfg["name"], "image_size": image_size, "options": options})
        model.replace_head(num_classes)
    model.set_trainable(mode, k=k)
    return model


def frozen_modules(model, mode: str, k: int | None) -> list[torch.nn.Module]:
    """Parts an attacker does not train. They stay in eval mode too, so BatchNorm statistics of a frozen body
    keep the released values (requires_grad alone would still let them drift)."""
    if mode == "full":
        return []
    blocks = model.block_modules()
    return blocks + [model.neck] if mode == "linear" else blocks[:-k]


def evaluation_steps(budget: int, evals: int) -> list[int]:
    """evals points spread evenly over a budget of optimiser steps, the last at its end."""
    return sorted({max(1, round(i * budget / evals)) for i in range(1, evals + 1)})


@dataclass
class AttackData:
    """The attacker's data: training batches (with or without augmentation), the task's test split, a validation
    slice of the attacker's own data (None without one) and its training data read once without augmentation
    (how well the attack fitted it)."""
    train: Callable[[bool], object]
    test: object
    val: object | None
    fit: object


def attack_point(ctx, model: torch.nn.Module, run: dict, data: AttackData, point_dir: Path) -> dict:
    """Fine-tunes model at one grid point for run["budget"] optimiser steps (run: mode, k, batch_size, optim with
    one lr and weight decay, augment, grad_clip, checkpoint_every, budget, eval_steps); test (and validation)
    accuracy at every evaluation step; resumable from point_dir. A non-finite loss ends it as diverged."""
    model = model.to(ctx.device)
    frozen = frozen_modules(model, run["mode"], run["k"])
    loader = data.train(run["augment"])
    engine = ctx.engine(model, run, total_steps=run["budget"])
    ckpt = CheckpointManager(point_dir, ctx.env)
    # Evaluations outlive a requeue: those before the last checkpoint are not recomputed on resume.
    curve: dict[str, dict] = read_json(point_dir / CURVE_FILE, default={})
    name = point_dir.name

    def step(engine, images, labels, global_step):
        for module in frozen:
            module.eval()
        return F.cross_entropy(engine(images), labels), {}

    def on_evaluate(global_step: int) -> dict:
        point = {"test": accuracy(engine.module, data.test, ctx.device)}
        if data.val is not None:
            point["val"] = accuracy(engine.module, data.val, ctx.device)
        curve[str(global_step)] = point
        if ctx.env.is_main:
            atomic_write_json(point_dir / CURVE_FILE, curve)
        return {f"acc_pl/{name}/{key}": value for key, value in point.items()}

    steps = list(run["eval_steps"])
    try:
        train(engine, loader, step, max_steps=run["budget"], ckpt=ckpt, log=ctx.log, env=ctx.env,
              seed=ctx.config["seed"], checkpoint_every=int(run.get("checkpoint_every") or 0),
              evaluate_at=set(steps), on_evaluate=on_evaluate, desc=name)
    except NonFiniteError as err:
        reached = [s for s in steps if str(s) in curve]
        return {"status": "diverged", "error": str(err), "steps": reached,
                "curve": [curve[str(s)]["test"] for s in reached]}
    result = {"status": "done", "steps": steps, "curve": [curve[str(s)]["test"] for s in steps],
              "train_acc": accuracy(engine.module, data.fit, ctx.device)}
    if data.val is not None:
        result["val_curve"] = [curve[str(s)]["val"] for s in steps]
    return result
