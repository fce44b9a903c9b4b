"""A role node as a stage config holds it: checked against RoleSpec at submission, with absolute shard patterns,
and the checks that need no job: local shards exist, an embedded dataset's class count, shared image sizes."""
from __future__ import annotations

import os
from collections.abc import Mapping

from trd.config.errors import ConfigError
from trd.config.schema import parse, plain

from .embedded import EMBEDDED
from .errors import DataError
from .role import SPLITS, RoleSpec
from .urls import require_shards


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
    role = {k: v for k, v in plain(spec).items()}
    role["train"], role["test"] = _absolute(spec.train), _absolute(spec.test)
    if spec.embedded:
        _check_embedded(spec, f"data.{path}")
    else:
        for split in SPLITS:
            if "://" in role[split] or role[split].startswith("pipe:"):
                continue
            try:
                require_shards(role[split])
            except DataError as err:
                raise ConfigError(f"data.{path}.{split}: {err}") from None
    return role


def _check_embedded(spec: RoleSpec, where: str) -> None:
    if spec.embedded not in EMBEDDED:
        raise ConfigError(f"{where}.embedded={spec.embedded!r} is not an embedded dataset: use one of "
                          f"{', '.join(sorted(EMBEDDED))}")
    if EMBEDDED[spec.embedded].num_classes != spec.num_classes:
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
