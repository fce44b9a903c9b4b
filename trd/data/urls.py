"""Shard URL patterns: brace expansion and the missing-shards check."""

from __future__ import annotations

import json
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


# Folder names (lower case, without - and _) that say which make_shards.py dataset a pattern's shards are.
_DATASET_FOLDERS = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn", "stl10": "stl10",
                    "tinyimagenet": "imagefolder", "tinyimagenet200": "imagefolder"}


def make_shards_command(pattern: str) -> str:
    """The launch/make_shards.py command that writes the shards of `pattern`: the dataset is taken from the
    meta.json an earlier make_shards.py left in the folder, else from the folder's name."""
    out_dir = os.path.dirname(pattern) or "."
    dataset = None
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            dataset = json.load(f).get("dataset")
    except (OSError, ValueError):
        pass
    folder = os.path.basename(out_dir).lower().replace("-", "").replace("_", "")
    tiny = folder.startswith("tinyimagenet")
    dataset = dataset or _DATASET_FOLDERS.get(folder)
    if dataset == "imagefolder" and tiny:
        return (f"python launch/make_shards.py imagefolder --root <your tiny-imagenet-200 folder> --tinyimagenet "
                f"--out {out_dir}")
    if dataset in ("cifar10", "cifar100", "svhn", "stl10"):
        return f"python launch/make_shards.py {dataset} --root <folder holding the raw {dataset} files> --out {out_dir}"
    return (f"python launch/make_shards.py <cifar10|cifar100|svhn|stl10|imagefolder> --root <raw data folder> "
            f"--out {out_dir}")


def make_shards_hint(pattern: str) -> str:
    return (f"create them with `{make_shards_command(pattern)}` and set the role's train/test to the patterns it "
            f"prints")


def missing_shards(pattern: str) -> tuple[list[str], list[str]]:
    """(all shard paths, the missing ones) of a local pattern."""
    urls = expand_urls(pattern)
    return urls, [url for url in urls if not os.path.isfile(url)]


def require_shards(pattern: str) -> list[str]:
    """Expand ``pattern`` and check every shard exists; return the shard paths."""
    urls, missing = missing_shards(pattern)
    if missing:
        raise DataError(
            f"{len(missing)} of {len(urls)} shards of pattern '{pattern}' are missing (first: {missing[0]}); "
            + make_shards_hint(pattern)
        )
    return urls
