"""A role node as a stage config holds it: checked against RoleSpec at submission, with absolute shard patterns,
and the checks that need no job: local shards exist, an embedded dataset's class count, shared image sizes."""
from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from trd.config.errors import ConfigError
from trd.config.schema import parse, plain

from .embedded import EMBEDDED
from .errors import DataError
from .role import SPLITS, RoleSpec
from .urls import make_shards_command, missing_shards


def _absolute(pattern: str) -> str:
    if "://" in pattern or pattern.startswith("pipe:") or os.path.isabs(pattern):
        return pattern
    return os.path.abspath(pattern)


def role_config(cfg: Mapping, path: str) -> dict:
    """data.<path> checked against RoleSpec, as plain data with absolute shard patterns (jobs run in other
    working directories); local shards that are not generated must exist now, not hours later in a job."""
    node = cfg["data"]
    for part in path.split("."):
        if part not in node or node[part] is None:
            raise ConfigError(f"data.{path} is not configured: add it to the data config")
        node = node[part]
    spec = parse(node, RoleSpec, f"data.{path}")
    # A key left at None stays out: stage hashes of roles that do not use it stay as they were before it existed.
    role = {k: v for k, v in plain(spec).items() if not (k == "classes" and v is None)}
    role["train"], role["test"] = _absolute(spec.train), _absolute(spec.test)
    if spec.embedded:
        _check_embedded(spec, f"data.{path}")
    else:
        for split in SPLITS:
            if "://" in role[split] or role[split].startswith("pipe:"):
                continue
            try:
                urls, missing = missing_shards(role[split])
            except DataError as err:
                raise ConfigError(f"data.{path}.{split}: {err}") from None
            if missing:
                _report_missing(f"data.{path}", split, role[split], len(urls), missing, str(cfg["data"].get("root", "")))
    return role


_collected: ContextVar[dict | None] = ContextVar("missing_shards", default=None)


@contextmanager
def all_missing_shards():
    """Inside it, role_config notes every role whose local shards are missing instead of stopping at the first;
    on leaving, one ConfigError names them all, each with the command that creates its shards."""
    found: dict[str, dict] = {}
    token = _collected.set(found)
    try:
        yield
    finally:
        _collected.reset(token)
    if found:
        raise ConfigError(missing_shards_message(found))


def _report_missing(where: str, split: str, pattern: str, total: int, missing: list[str], data_root: str) -> None:
    entry = {"pattern": pattern, "total": total, "missing": missing, "data_root": data_root}
    found = _collected.get()
    if found is None:
        raise ConfigError(missing_shards_message({where: {split: entry}}))
    found.setdefault(where, {})[split] = entry


def missing_shards_message(found: dict[str, dict]) -> str:
    lines = [f"the shards of {len(found)} data role{'s' if len(found) > 1 else ''} are missing; create them, then "
             f"submit again:"]
    roots, listed = set(), {}
    for where, splits in found.items():
        patterns = tuple(sorted(e["pattern"] for e in splits.values()))
        if patterns in listed:
            lines.append(f"  {where}: the same shards as {listed[patterns]}")
            continue
        listed[patterns] = where
        for split, e in splits.items():
            lines.append(f"  {where}.{split}: {len(e['missing'])} of {e['total']} shards of '{e['pattern']}' missing "
                         f"(first: {e['missing'][0]})")
        commands = dict.fromkeys(make_shards_command(e["pattern"]) for e in splits.values())
        lines += [f"    {command}" for command in commands]
        overrides = " ".join(f"{where}.{split}=\"'<the {split} pattern it prints>'\"" for split in splits)
        lines.append(f"    then, if it prints other patterns: {overrides}")
        roots.update(e["data_root"] for e in splits.values()
                     if e["data_root"] and e["pattern"].startswith(e["data_root"].rstrip("/") + "/"))
    if roots:
        lines.append(f"  shards that exist elsewhere: point data.root (now {', '.join(sorted(roots))}) or the TRD_DATA "
                     f"variable at the folder that holds them")
    return "\n".join(lines)


def _check_embedded(spec: RoleSpec, where: str) -> None:
    if spec.embedded not in EMBEDDED:
        raise ConfigError(f"{where}.embedded={spec.embedded!r} is not an embedded dataset: use one of "
                          f"{', '.join(sorted(EMBEDDED))}")
    labels = EMBEDDED[spec.embedded].num_classes
    if spec.classes and max(spec.classes) >= labels:
        raise ConfigError(f"{where}.classes={spec.classes} but its data ({spec.embedded}) has labels 0..{labels - 1}: "
                          f"list labels it has")
    if not spec.classes and labels != spec.num_classes:
        raise ConfigError(f"{where}.num_classes={spec.num_classes} but its data ({spec.embedded}) has "
                          f"{EMBEDDED[spec.embedded].num_classes} classes: set "
                          f"{where}.num_classes={EMBEDDED[spec.embedded].num_classes}")


def check_same_image_size(roles: Mapping[str, dict]) -> None:
    """One model sees all these roles (name -> role config): their image sizes must agree."""
    names = list(roles)
    first = names[0]
    for other in names[1:]:
        if roles[other]["image_size"] != roles[first]["image_size"]:
            raise ConfigError(
                f"data.{other}.image_size={roles[other]['image_size']} differs from data.{first}.image_size="
                f"{roles[first]['image_size']}: one model sees both; set data.{other}.image_size="
                f"{roles[first]['image_size']} (shards are resized on load)")


def check_disjoint_classes(first: str, a: dict, second: str, b: dict) -> None:
    """data.<first> and data.<second> read from the same train shards: they must keep disjoint classes."""
    if a["train"] != b["train"]:
        return
    kept_a, kept_b = a.get("classes"), b.get("classes")
    if kept_a is None or kept_b is None:
        whole = first if kept_a is None else second
        raise ConfigError(f"data.{second} reads the shards of data.{first} and data.{whole} keeps every class of "
                          f"them: give both a `classes` list, with no class in both")
    common = sorted(set(kept_a) & set(kept_b))
    if common:
        raise ConfigError(f"data.{second}.classes={kept_b} shares {common} with data.{first}.classes={kept_a}: "
                          f"a class is either {first} or {second}; remove {common} from one of them")


def beneficial_and_malicious(cfg: Mapping) -> tuple[dict, dict]:
    """The transfer-resistant setting's roles: data.source (the beneficial task the released model serves) and
    data.malicious (the task the defender knows a free-rider wants), one model's input size, disjoint classes."""
    source, malicious = role_config(cfg, "source"), role_config(cfg, "malicious")
    check_same_image_size({"source": source, "malicious": malicious})
    check_disjoint_classes("source", source, "malicious", malicious)
    return source, malicious
