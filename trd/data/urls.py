"""Shard URL patterns: brace expansion and the missing-shards check."""

from __future__ import annotations

import os

import webdataset as wds

from .errors import DataError


def expand_urls(pattern: str) -> list[str]:
    """Expand a WebDataset brace pattern (``/d/train-{000000..000009}.tar``) into paths.

    Uses webdataset's own expansion, so ``::``-joined lists and ``${WDS_...}`` variables
    behave exactly as they would in a plain ``wds.WebDataset``; ``~`` is expanded too.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise DataError(f"shard pattern {pattern!r} is not a non-empty string: set it to e.g. '/data/c10/train-{{000000..000009}}.tar'")
    return [os.path.expanduser(url) for url in wds.shardlists.expand_urls(pattern.strip())]


def make_shards_hint(pattern: str) -> str:
    out_dir = os.path.dirname(pattern) or "."
    return (
        f"create them with `python launch/make_shards.py <cifar10|cifar100|svhn|stl10|imagefolder> --root <raw data dir> --out {out_dir}` "
        f"(or `python launch/make_shards.py --dataset embedded --name <name> --out {out_dir}`) and paste the printed pattern into the config"
    )


def require_shards(pattern: str) -> list[str]:
    """Expand ``pattern`` and check every shard exists; return the shard paths."""
    urls = expand_urls(pattern)
    missing = [url for url in urls if not os.path.isfile(url)]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(urls)} shards of pattern '{pattern}' are missing (first: {missing[0]}); "
            + make_shards_hint(pattern)
        )
    return urls
