"""Per-shard index of (key, label): one header pass over each tar, cached in a sidecar JSON.

The index is what makes shards trd did not write usable: it gives exact sample counts
(steps per epoch), the labels a class-balanced ``fraction`` needs, and finds truncated
tars and malformed samples before training starts instead of in the middle of an epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field

from webdataset.tariterators import base_plus_ext

INDEX_VERSION = 1
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "ppm", "webp")


@dataclass
class ShardIndex:
    url: str
    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    # Samples that cannot be used: (key, reason). Kept apart so the loader decides
    # whether they are an error or skipped (skip_corrupt).
    bad: list[tuple[str, str]] = field(default_factory=list)
    # Set when the tar itself cannot be read to the end (truncated, not a tar).
    error: str | None = None


def cache_dir() -> str:
    return os.environ.get("TRD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trd")


def _is_meta(name: str) -> bool:
    base = os.path.basename(name)
    return base.startswith("__") and base.endswith("__")


def _close_sample(index: ShardIndex, key: str, suffixes: set[str], label, label_problem: str | None, seen: set[str]) -> None:
    if key in seen:
        index.bad.append((key, "duplicate key in shard"))
        return
    seen.add(key)
    if not any(ext in suffixes for ext in IMAGE_EXTENSIONS):
        index.bad.append((key, f"no image (expected one of .{', .'.join(IMAGE_EXTENSIONS)}; has {', '.join(sorted(suffixes)) or 'nothing'})"))
    elif label_problem is not None:
        index.bad.append((key, label_problem))
    else:
        index.keys.append(key)
        index.labels.append(label)


def index_shard(url: str) -> ShardIndex:
    """Read the tar headers of one shard and the ``.cls`` members only."""
    index = ShardIndex(url=url)
    seen: set[str] = set()
    try:
        with tarfile.open(url, mode="r:*") as tar:
            key, suffixes, label, problem = None, set(), None, "no 'cls' label"
            for member in tar:
                if not member.isreg() or _is_meta(member.name):
                    continue
                prefix, suffix = base_plus_ext(member.name)
                if prefix is None:
                    continue
                suffix = suffix.lower()
                if prefix != key:
                    if key is not None:
                        _close_sample(index, key, suffixes, label, problem, seen)
                    key, suffixes, label, problem = prefix, set(), None, "no 'cls' label"
                suffixes.add(suffix)
                if suffix == "cls":
                    text = tar.extractfile(member).read().decode("utf-8", "replace").strip()
                    try:
                        label, problem = int(text), None
                    except ValueError:
                        problem = f"'cls' is {text[:20]!r}, not an integer"
            if key is not None:
                _close_sample(index, key, suffixes, label, problem, seen)
            # tarfile stops silently at a missing or partial header, so a file cut at a
            # member boundary would look complete: require the end-of-archive zero block.
            tar.fileobj.seek(tar.offset)
            end = tar.fileobj.read(tarfile.BLOCKSIZE)
            if len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"no end-of-archive block at byte {tar.offset} (file cut short?)")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        index.error = f"{type(exc).__name__}: {exc}"
    return index


def _fingerprint(urls: list[str]) -> str:
    parts = []
    for url in urls:
        st = os.stat(url)
        parts.append([os.path.abspath(url), st.st_size, st.st_mtime_ns])
    blob = json.dumps([INDEX_VERSION, parts]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _to_json(indices: list[ShardIndex]) -> dict:
    return {
        "version": INDEX_VERSION,
        "shards": [
            {"url": s.url, "keys": s.keys, "labels": s.labels, "bad": [list(b) for b in s.bad], "error": s.error}
            for s in indices
        ],
    }


def _from_json(blob: dict, urls: list[str]) -> list[ShardIndex] | None:
    if blob.get("version") != INDEX_VERSION or [s["url"] for s in blob["shards"]] != urls:
        return None
    return [
        ShardIndex(url=s["url"], keys=s["keys"], labels=s["labels"], bad=[tuple(b) for b in s["bad"]], error=s["error"])
        for s in blob["shards"]
    ]


def load_index(urls: list[str]) -> list[ShardIndex]:
    """Index of every shard in ``urls``, from the cache when no shard changed (size, mtime)."""
    path = os.path.join(cache_dir(), "index", _fingerprint(urls) + ".json")
    try:
        with open(path) as f:
            cached = _from_json(json.load(f), urls)
        if cached is not None:
            return cached
    except (OSError, ValueError, KeyError):
        pass
    indices = [index_shard(url) for url in urls]
    try:
        # Several ranks may index the same shards at once: each writes a private temp
        # file and renames it, so a reader never sees a half-written index.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    except OSError:
        return indices  # an unwritable cache only costs re-indexing next time
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_to_json(indices), f)
        os.replace(temp, path)
    except OSError:
        if os.path.exists(temp):
            os.remove(temp)
    return indices
