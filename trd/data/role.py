"""A dataset role node (``data.source``, ``data.target``, ``data.piggyback.<name>``) as a typed spec.

RoleSpec is the one schema of a role: planning checks a role's node against it at submission (role_config.py),
and the data layer reads the plain copy in stage.json back through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from trd.config.errors import ConfigError
from trd.config.schema import at_least, each, knob, parse, positive, within

from .errors import DataError

SPLITS = ("train", "test")


def _triple(value, key: str) -> tuple[float, float, float]:
    values = (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(values) != 3:
        raise ConfigError(f"{key}={list(values)} has {len(values)} values: give 3 (one per RGB channel) or one number")
    return values


@dataclass(frozen=True)
class RoleSpec:
    """train, test: shard brace patterns; fraction: class-balanced share of the train split (deterministic by
    fraction_seed); part: [a, b], the slice from a to b of a permutation (seeded by part_seed) of what is left
    of the train split, so disjoint slices of one split can serve different users (the defender's and the
    attacker's data, an attacker's training and validation data); holdout: the last share of that slice, kept
    out of every read of the train split (validation_role reads it: the owner's validation data); classes: the shards' labels to keep, in both
    splits, relabelled 0..k-1 in the order given (num_classes is then k); embedded: a name in trd.data.EMBEDDED,
    generated at the patterns when missing; mean, std: one number or three; augment: random crop + flip for
    train loaders; shuffle_buffer: samples."""

    train: str
    test: str
    num_classes: int = knob(rule=at_least(1))
    image_size: int = knob(rule=at_least(4))
    fraction: float | None = knob(None, within(0, 1, low_open=True))
    fraction_seed: int = 0
    part: list[float] | None = knob(None, each(within(0, 1)))
    part_seed: int = 0
    holdout: float = knob(0.0, within(0, 1, high_open=True))
    classes: list[int] | None = knob(None, each(at_least(0)))
    embedded: str | None = None
    mean: float | list[float] = 0.5
    std: float | list[float] = knob(0.5, each(positive()))
    augment: bool = True
    shuffle_buffer: int = knob(1000, at_least(1))

    def check(self, where: str) -> None:
        if self.classes is not None:
            if not self.classes or len(set(self.classes)) != len(self.classes):
                raise ConfigError(f"{where}.classes={self.classes} must list distinct labels of the shards, e.g. [5, 6, 7]")
            if self.num_classes != len(self.classes):
                raise ConfigError(f"{where}.num_classes={self.num_classes} but {where}.classes keeps "
                                  f"{len(self.classes)}: set num_classes: {len(self.classes)} (the classes are "
                                  f"relabelled 0..{len(self.classes) - 1} in the order given)")
        if self.part is not None and (len(self.part) != 2 or not self.part[0] < self.part[1]):
            raise ConfigError(f"{where}.part={self.part} must be [a, b] with 0 <= a < b <= 1, e.g. [0.8, 1.0]")
        object.__setattr__(self, "mean", _triple(self.mean, f"{where}.mean"))
        object.__setattr__(self, "std", _triple(self.std, f"{where}.std"))

    @property
    def train_part(self) -> list[float] | None:
        """The slice of the train split this role reads: part without its holdout."""
        return sub_part(self.part, [0.0, 1.0 - self.holdout]) if self.holdout else self.part

    def pattern(self, split: str) -> str:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return getattr(self, split)


def sub_part(part: list[float] | None, inner: list[float]) -> list[float]:
    """The slice `inner` of the slice `part` (None: the whole split), as one slice of the split."""
    low, high = part or (0.0, 1.0)
    return [low + (high - low) * inner[0], low + (high - low) * inner[1]]


def validation_role(role: dict) -> dict:
    """The held-out slice of role's train split (its `holdout`) as a role of its own, without augmentation."""
    holdout = float(role.get("holdout") or 0.0)
    if not holdout:
        raise ValueError("the role has no holdout: set its holdout (e.g. 0.1) to hold out a validation slice")
    return {**role, "part": sub_part(role.get("part"), [1.0 - holdout, 1.0]), "holdout": 0.0, "augment": False}


def parse_role(role, where: str = "data role") -> RoleSpec:
    """A role node (OmegaConf or plain) as a RoleSpec; a bad key or value is the data layer's one-line DataError
    (at submission, role_config gives the same message as a ConfigError)."""
    try:
        return parse(role, RoleSpec, where)
    except ConfigError as err:
        raise DataError(str(err)) from None
