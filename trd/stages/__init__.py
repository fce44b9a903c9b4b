"""Stage kinds as plug-ins: every module of this package that defines `KIND` (a trd.plan.StageKind), and every
one an installed package registers under the entry-point group `trd.stages` (`name = "pkg.module:KIND"`).

    kinds = discover()          # name -> StageKind, for planning
    kind = get_kind("dispose")  # in a stage's job
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib import metadata
from types import ModuleType

from trd.plan import StageKind

ENTRY_POINT_GROUP = "trd.stages"


def _kind_of(obj, where: str) -> StageKind | None:
    kind = getattr(obj, "KIND", None) if isinstance(obj, ModuleType) else obj
    if kind is None:
        return None
    if not isinstance(kind, StageKind):
        raise TypeError(f"{where} must be a trd.plan.StageKind, got {type(kind).__name__}")
    return kind


@functools.lru_cache(maxsize=1)
def _discover() -> tuple[tuple[str, StageKind, str], ...]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__, __name__ + "."), key=lambda i: i.name):
        kind = _kind_of(importlib.import_module(info.name), f"{info.name}.KIND")
        if kind is not None:
            found.append((kind.name, kind, info.name))
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        kind = _kind_of(entry.load(), f"entry point {entry.name} = {entry.value}")
        if kind is not None:
            found.append((kind.name, kind, entry.value))
    return tuple(found)


def discover() -> dict[str, StageKind]:
    kinds: dict[str, StageKind] = {}
    where: dict[str, str] = {}
    for name, kind, origin in _discover():
        if name in kinds:
            raise ValueError(f"two stage kinds are named {name!r}: {where[name]} and {origin}; rename one")
        kinds[name], where[name] = kind, origin
    return kinds


def get_kind(name: str) -> StageKind:
    kinds = discover()
    if name not in kinds:
        raise ValueError(f"unknown stage kind {name!r}: known kinds are {', '.join(sorted(kinds))} (is the package "
                         f"that adds it installed in this environment?)")
    return kinds[name]
