"""The piggyback attacker (Koh et al., Def. 3.3): a free-rider who adapts released weights, with a new head, to
a task of their own, at one point of their settings (learning rate, ...), evaluated after every epoch.

One run (`attack_point`) starts from the released weights (or a random init: the scratch reference) and the
same new head at every point; `summarise` turns the points' learning curves into the attacker's accuracy.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from trd.atomic import atomic_write_json, read_json
from trd.engine.checkpoint import CheckpointManager
from trd.engine.evaluation import accuracy
from trd.engine.loop import train
from trd.losses.finite import NonFiniteError
from trd.models.io import load_model
from trd.models.registry import build_from_config
from trd.models.release import released_model_path

CURVE_FILE = "curve.json"


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def attacker_model(model_cfg: dict, attacked: dict, task: dict, mode: str, k: int | None, seed: int,
                   released_dir: Path | None) -> torch.nn.Module:
    """The released weights (attacked["init"] = released | file) or a random init (scratch), with a fresh head
    for the task and mode's parameters trainable; the same for every point of one seed."""
    torch.manual_seed(seed)
    num_classes, image_size = int(task["num_classes"]), int(task["image_size"])
    if attacked["init"] == "scratch":
        model = build_from_config(model_cfg, num_classes, image_size)
    else:
        if attacked["init"] == "file":
            path = Path(attacked["path"])
            if file_sha256(path) != attacked["sha256"]:
                raise ValueError(f"{path} changed since the experiment was planned: submit it again")
        else:
            path = released_model_path(released_dir)
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


def attack_point(ctx, model: torch.nn.Module, train_cfg: dict, loader, test_loader, point_dir: Path) -> dict:
    """Fine-tunes model at one point (train_cfg: mode, k, epochs, batch_size, optim with one lr, ...), test
    accuracy after every epoch; resumable from point_dir. A non-finite loss ends it as diverged."""
    model = model.to(ctx.device)
    frozen = frozen_modules(model, train_cfg["mode"], train_cfg["k"])
    engine = ctx.engine(model, train_cfg, loader.steps_per_epoch)
    ckpt = CheckpointManager(point_dir, ctx.env)
    # Epoch accuracies outlive a requeue: epochs before the last checkpoint are not recomputed on resume.
    curve: dict[str, float] = read_json(point_dir / CURVE_FILE, default={})
    name = point_dir.name

    def step(engine, images, labels, global_step):
        for module in frozen:
            module.eval()
        return F.cross_entropy(engine(images), labels), {}

    def on_epoch_end(epoch: int) -> dict:
        curve[str(epoch)] = accuracy(engine.module, test_loader, ctx.device)
        if ctx.env.is_main:
            atomic_write_json(point_dir / CURVE_FILE, curve)
        return {f"acc_pl/{name}": curve[str(epoch)]}

    epochs = int(train_cfg["epochs"])
    try:
        progress = train(engine, loader, step, epochs=epochs, ckpt=ckpt, log=ctx.log, env=ctx.env,
                         seed=ctx.config["seed"], checkpoint_every=int(train_cfg.get("checkpoint_every") or 0),
                         on_epoch_end=on_epoch_end, desc=name)
        result = {"status": "done", "curve": [curve[str(e)] for e in range(1, epochs + 1)],
                  "steps": progress["global_step"]}
    except NonFiniteError as err:
        result = {"status": "diverged", "error": str(err),
                  "curve": [curve[str(e)] for e in range(1, epochs + 1) if str(e) in curve]}
    return result


def summarise(points: list[dict]) -> dict:
    """The attacker's accuracy from a grid's results; points[0] is the fixed point.

    final: test accuracy after the last epoch of the fixed point (what an attacker who runs the scheme as
    written gets); null when it diverged. best: the highest test accuracy over every point that did not
    diverge and every epoch: chosen on the test set, an upper bound on any attacker of this grid (best-of-grid).
    A diverged point is left out, never counted as 0%; if every point diverged the attack itself is diverged."""
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
