"""A dataset role node (``data.source``, ``data.target``, ``data.piggyback.<name>``) read into a typed spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import DataError

SPLITS = ("train", "test")


def _plain(role) -> dict:
    # Roles arrive as OmegaConf DictConfigs from hydra or as dicts from tests; resolve
    # interpolations once here so the rest of the package sees plain Python values.
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(role, DictConfig):
            return OmegaConf.to_container(role, resolve=True)
    except ImportError:
        pass
    if not isinstance(role, Mapping):
        raise DataError(f"data role must be a mapping with keys train/test/num_classes/image_size, got {type(role).__name__}")
    return dict(role)


@dataclass(frozen=True)
class RoleSpec:
    """A role node's keys. Required: train, test (shard brace patterns), num_classes,
    image_size. Optional: fraction (class-balanced share of the train split, in (0, 1])
    and fraction_seed; embedded (name in trd.data.EMBEDDED, generated at the patterns
    when missing); mean, std (one number or three); augment (random crop + flip for
    train loaders, default true); shuffle_buffer (samples, default 1000)."""

    train: str
    test: str
    num_classes: int
    image_size: int
    fraction: float | None = None
    fraction_seed: int = 0
    embedded: str | None = None
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    augment: bool = True
    shuffle_buffer: int = 1000

    def pattern(self, split: str) -> str:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return getattr(self, split)


def _triple(value, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise DataError(f"data role key '{name}' has {len(values)} values; give 3 (one per RGB channel) or one number")
    return values


def parse_role(role) -> RoleSpec:
    """Validate a role node; unknown keys are ignored so other parts of trd may add their own."""
    node = _plain(role)
    for key in ("train", "test", "num_classes", "image_size"):
        if node.get(key) is None:
            raise DataError(f"data role is missing '{key}': add it to the role node (keys: train, test, num_classes, image_size)")
    num_classes, image_size = int(node["num_classes"]), int(node["image_size"])
    if num_classes < 1:
        raise DataError(f"data role num_classes={num_classes} must be >= 1")
    if image_size < 4:
        raise DataError(f"data role image_size={image_size} must be >= 4")
    fraction = node.get("fraction")
    if fraction is not None:
        fraction = float(fraction)
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"data role fraction={fraction} must be in (0, 1]: e.g. 0.01 for a 1% class-balanced subset")
    std = _triple(node.get("std", 0.5), "std")
    if min(std) <= 0:
        raise DataError(f"data role std={std} must be positive")
    shuffle_buffer = int(node.get("shuffle_buffer", 1000))
    if shuffle_buffer < 1:
        raise DataError(f"data role shuffle_buffer={shuffle_buffer} must be >= 1")
    return RoleSpec(
        train=str(node["train"]),
        test=str(node["test"]),
        num_classes=num_classes,
        image_size=image_size,
        fraction=fraction,
        fraction_seed=int(node.get("fraction_seed", 0) or 0),
        embedded=node.get("embedded") or None,
        mean=_triple(node.get("mean", 0.5), "mean"),
        std=std,
        augment=bool(node.get("augment", True)),
        shuffle_buffer=shuffle_buffer,
    )
