"""Typed config nodes: dataclasses whose fields say their type and allowed range.

`parse(node, Cls, "dispose")` turns a config node (an OmegaConf node or plain data) into a `Cls`, or fails
with one line that names the key, the value and what is allowed; `plain(obj)` turns it back into the plain
data that stage.json holds. A node's own cross-key rules go in a `check(self, where)` method.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from trd.config.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a value must satisfy, and the words that say so in an error."""
    test: Callable[[Any], bool]
    allowed: str
    each: bool = False  # applies to every element of a list value
    outside: Any = None  # a value the rule refuses (what tests try)


def within(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    def test(v):
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return Rule(test, f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}", outside=high + 1)


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f">= {low:g}", outside=low - 1)


def positive() -> Rule:
    return Rule(lambda v: v > 0, "> 0", outside=0)


def one_of(*choices: str) -> Rule:
    bad = "none-of-these" if all(isinstance(c, str) for c in choices) else max(choices) + 1
    return Rule(lambda v: v in choices, f"one of {', '.join(map(str, choices))}", outside=bad)


def each(rule: Rule) -> Rule:
    return Rule(rule.test, f"with every element {rule.allowed}", each=True, outside=[rule.outside])


def knob(default: Any = dataclasses.MISSING, rule: Rule | None = None, *, factory: Callable | None = None,
         kw_only: bool = False):
    """A dataclass field with its rule; no default makes the key required (its value comes from the YAML).
    kw_only lets a required key follow keys with defaults (a subclass adding one to TrainConfig)."""
    metadata = {"rule": rule} if rule else {}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, kw_only=kw_only)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, kw_only=kw_only)
    return dataclasses.field(default=default, metadata=metadata, kw_only=kw_only)


def to_data(node) -> Any:
    """Plain Python data from an OmegaConf node (interpolations resolved), a dataclass or plain data."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return plain(node)
    return node


def plain(obj) -> Any:
    """A parsed node (or a tree holding some) as plain data: dicts, lists, numbers, strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + (" or null" if len(args) < len(typing.get_args(tp)) else "")
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _convert(value, tp, where: str):
    """value as type tp, or _Mismatch (the caller names the key)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if value is None:
        raise _Mismatch
    if dataclasses.is_dataclass(tp):
        return parse(value, tp, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_convert_item(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        item = (typing.get_args(tp) or (str, Any))[1]
        return {str(k): _convert_item(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"{where}: trd's config schema has no rule for type {tp!r}")


def _convert_item(value, tp, where: str):
    try:
        return _convert(value, tp, where)
    except _Mismatch:
        raise ConfigError(f"{where}={value!r} must be {_describe(tp)}") from None


def _optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def parse(node, cls, where: str):
    """node as a cls instance, every key known, typed and in range; cls.check(self, where) runs last."""
    data = to_data(node)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys ({', '.join(f.name for f in dataclasses.fields(cls))}), "
                          f"got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {where}.{unknown[0]}: {where} takes {', '.join(sorted(fields))}")
    hints = _hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data or (data[name] is None and required and not _optional(hints[name])):
            if required:
                raise ConfigError(f"{key} is missing: {where} needs it ({_describe(hints[name])})")
            continue
        raw = data[name]
        try:
            value = _convert(raw, hints[name], key)
        except _Mismatch:
            raise ConfigError(f"{key}={raw!r} must be {_describe(hints[name])}") from None
        rule: Rule | None = f.metadata.get("rule")
        if rule is not None and value is not None:
            items = value if rule.each and isinstance(value, list) else [value]
            if not all(rule.test(v) for v in items):
                raise ConfigError(f"{key}={raw!r} is out of range: it must be {rule.allowed}")
        values[name] = value
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def rules(cls) -> dict[str, Rule | None]:
    """Each field's rule (None where it has none): what tests use to try every range."""
    return {f.name: f.metadata.get("rule") for f in dataclasses.fields(cls)}
