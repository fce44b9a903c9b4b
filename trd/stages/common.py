"""Plan-time and run-time helpers shared by the stage files: config subtrees, loaders, engines, models."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from trd.plan import ConfigError, take

ROLE_KEYS = ("train", "test", "num_classes", "image_size", "fraction", "fraction_seed", "embedded", "mean",
             "std", "augment", "shuffle_buffer")
TRAIN_KEYS = ("epochs", "batch_size", "optim", "grad_clip", "checkpoint_every")
OPTIM_KEYS = ("name", "lr", "momentum", "nesterov", "weight_decay", "betas", "schedule", "warmup_steps",
              "min_lr_ratio", "milestones", "gamma")


def _absolute(pattern: str) -> str:
    if "://" in pattern or os.path.isabs(pattern):
        return pattern
    return os.path.abspath(pattern)


def role_config(cfg: Mapping, role_path: str) -> dict:
    """data.<role> as a plain dict with absolute shard patterns (jobs run in other working directories)."""
    node = cfg["data"]
    for part in role_path.split("."):
        if part not in node:
            raise ConfigError(f"data.{role_path} is not configured: add it to the data config")
        node = node[part]
    role = take(node, ROLE_KEYS, f"data.{role_path}")
    for key in ("train", "test", "num_classes", "image_size"):
        if role.get(key) in (None, ""):
            raise ConfigError(f"data.{role_path}.{key} is missing: every dataset role needs {key}")
    role["train"], role["test"] = _absolute(role["train"]), _absolute(role["test"])
    if not role.get("embedded"):
        _check_shards_exist(role, role_path)
    return role


def _check_shards_exist(role: dict, role_path: str) -> None:
    """Fails at submission, not hours later in a queued job, when local shards are missing."""
    from trd.data.errors import DataError
    from trd.data.urls import require_shards

    for split in ("train", "test"):
        if "://" in role[split] or role[split].startswith("pipe:"):
            continue
        try:
            require_shards(role[split])
        except DataError as err:
            raise ConfigError(f"data.{role_path}.{split}: {err}") from None


def data_options(cfg: Mapping) -> dict:
    return {"num_workers": int(cfg["data"].get("num_workers", 0)),
            "skip_corrupt": bool(cfg["data"].get("skip_corrupt", False))}


def train_config(cfg: Mapping, key: str, extra_keys: tuple[str, ...] = ()) -> dict:
    """cfg.<key> (a training stage's node: epochs, batch size, optimiser, ...) as a checked plain dict."""
    train = take(cfg[key], TRAIN_KEYS + tuple(extra_keys), key)
    train["optim"] = take(train["optim"], OPTIM_KEYS, f"{key}.optim")
    return train


def world_size(cfg: Mapping) -> int:
    launcher = cfg["launcher"]
    return int(launcher.get("nodes", 1)) * int(launcher.get("tasks_per_node", 1))


def plain(node) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def common_config(cfg: Mapping) -> dict:
    """What every training stage's output depends on besides its own node."""
    return {"seed": int(cfg["seed"]), "world_size": world_size(cfg), "deepspeed": plain(cfg["deepspeed"]),
            "data_options": data_options(cfg)}


def check_image_sizes(cfg: Mapping, *roles: str) -> None:
    sizes = {r: int(role_config(cfg, r)["image_size"]) for r in roles}
    if len(set(sizes.values())) > 1:
        first = roles[0]
        other = next(r for r in roles if sizes[r] != sizes[first])
        raise ConfigError(
            f"data.{other}.image_size={sizes[other]} differs from data.{first}.image_size={sizes[first]}: "
            f"one model sees both; set data.{other}.image_size={sizes[first]} (shards are resized on load)"
        )


# ---------------------------------------------------------------- run time

def build_train_loader(ctx, role: dict, batch_size: int):
    from trd.data import build_loader, ensure_role_shards

    if batch_size % ctx.env.world_size:
        raise ConfigError(f"batch_size={batch_size} does not split over {ctx.env.world_size} ranks: "
                          f"use a multiple of {ctx.env.world_size}")
    ensure_role_shards(role)
    opts = ctx.config["data_options"]
    return build_loader(role, "train", batch_size // ctx.env.world_size, train=True, seed=ctx.config["seed"],
                        rank=ctx.env.rank, world_size=ctx.env.world_size, num_workers=opts["num_workers"],
                        skip_corrupt=opts["skip_corrupt"])


def build_test_loader(ctx, role: dict, batch_size: int = 256):
    from trd.data import build_loader, ensure_role_shards

    ensure_role_shards(role)
    opts = ctx.config["data_options"]
    return build_loader(role, "test", batch_size, train=False, seed=ctx.config["seed"], rank=ctx.env.rank,
                        world_size=ctx.env.world_size, num_workers=opts["num_workers"],
                        skip_corrupt=opts["skip_corrupt"])


def make_engine(ctx, model: torch.nn.Module, train: dict, steps_per_epoch: int):
    from trd.engine.deepspeed_engine import build_engine
    from trd.engine.optim import build_optimizer, build_scheduler

    optimizer = build_optimizer(model.parameters(), train["optim"])
    scheduler = build_scheduler(optimizer, train["optim"], total_steps=train["epochs"] * steps_per_epoch)
    return build_engine(model, optimizer, scheduler, ctx.config["deepspeed"],
                        micro_batch=train["batch_size"] // ctx.env.world_size, env=ctx.env,
                        grad_clip=float(train.get("grad_clip", 0.0)))


def save_outputs(ctx, model: torch.nn.Module, source_head: torch.nn.Module | None = None) -> None:
    """model.safetensors is what gets released (body + target head); the source head stays private beside it
    so source accuracy (and SRC-KD) can be measured. Rank 0 only; written atomically."""
    from safetensors.torch import save_file

    from trd.engine.atomic import atomic_write
    from trd.models.io import save_model

    if not ctx.env.is_main:
        return
    atomic_write(ctx.dir / "model.safetensors", lambda tmp: save_model(model, tmp))
    if source_head is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in source_head.state_dict().items()}
        atomic_write(ctx.dir / "source_head.safetensors", lambda tmp: save_file(state, tmp))


def load_source_head(stage_dir: Path, feature_dim: int, num_classes: int) -> torch.nn.Linear | None:
    from safetensors.torch import load_file

    path = Path(stage_dir) / "source_head.safetensors"
    if not path.exists():
        return None
    head = torch.nn.Linear(feature_dim, num_classes)
    head.load_state_dict(load_file(str(path)))
    return head


def released_model_path(stage_dir: Path) -> Path:
    path = Path(stage_dir) / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: its stage has not finished; rerun the experiment")
    return path
