"""Command-line overrides checked before Hydra sees them, for the two mistakes whose Hydra message does not say
the fix: an unquoted brace pattern, and a key the config does not have (written without `+`)."""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

from trd.config.errors import ConfigError


def _value_overrides(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]


def check_syntax(args: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for text in _value_overrides(args):
        try:
            parser.parse_overrides([text])
        except OverrideParseException as err:
            key, _, value = text.partition("=")
            if "{" in value and ".." in value:
                raise ConfigError(f"{key}={value}: Hydra reads the braces of a shard pattern as a mapping; quote "
                                  f"the pattern, e.g. {key}=\"'{value}'\" (outer quotes for the shell, inner "
                                  f"for Hydra)") from None
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{text}: Hydra cannot parse this override ({reason}); quote a value with special "
                              f"characters, e.g. {key}=\"'{value}'\"") from None


def _first_values(args: list[str]) -> list[str]:
    """The overrides with every sweep (a=1,2 or a=range(...)) reduced to its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for text in _value_overrides(args):
        override = parser.parse_overrides([text])[0]
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            out.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        else:
            out.append(text)
    return out


def check_keys(args: list[str], config_dir: str, config_name: str,
               schema_at: Callable[[str], type | None] = lambda path: None) -> None:
    """A plain override of a key the composed config does not have is trd's one-line error: for a key of the
    node's schema that the YAML leaves at its default, the override with `+`; otherwise the keys allowed there
    (Hydra's own message says neither). schema_at(dotted path) gives the schema of a node, if it has one."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf

    overrides = [o for o in _first_values(args) if not o.lstrip("+~").startswith("hydra")]

    def compose_with(chosen: list[str]):
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return compose(config_name=config_name, overrides=chosen)

    try:
        compose_with(overrides)
        return
    except HydraException as err:
        found = re.search(r"Could not override '([^']+)'", str(err))
        if not found or "To append to your config use +" not in str(err):
            return  # Hydra's own message says it well enough
    key = found.group(1)
    rest = [o for o in overrides if o.split("=", 1)[0] != key]
    try:
        node = compose_with(rest)
    except HydraException:
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(node, parent) if parent else node
    schema = schema_at(parent) if parent else None
    if schema is not None and leaf in {f.name for f in dataclasses.fields(schema)}:
        given = next(o for o in overrides if o.split("=", 1)[0] == key)
        raise ConfigError(f"{key} is not set in the config (it takes its default), so Hydra needs a + to set it: "
                          f"+{given}")
    if isinstance(node, DictConfig):
        allowed = sorted(set(node) | ({f.name for f in dataclasses.fields(schema)} if schema else set()))
        raise ConfigError(f"unknown config key {key}: {parent or 'the config'} takes {', '.join(allowed)}")
