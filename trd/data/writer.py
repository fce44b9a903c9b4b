"""Writing WebDataset shards: ``__key__``, an image under png/jpg, the class under ``cls``."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import numpy as np
import webdataset as wds
from PIL import Image

from .errors import DataError


def image_entry(image) -> tuple[str, bytes]:
    """(extension, bytes) for a PIL image, an HxWx3 uint8 array, or already-encoded PNG/JPEG bytes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return "png", data
        if data.startswith(b"\xff\xd8"):
            return "jpg", data
        raise DataError("image bytes are neither PNG nor JPEG: pass a PIL image or an HxWx3 uint8 array instead")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise DataError(f"cannot write an image of type {type(image).__name__}: pass a PIL image, a uint8 array or PNG bytes")
    buffer = io.BytesIO()
    # Low compression: shards are read far more often than written, and decode cost
    # does not depend on the level while write time does.
    image.save(buffer, format="PNG", compress_level=1)
    return "png", buffer.getvalue()


def encode_sample(key: str, image, cls: int) -> dict:
    if "." in key or "/" in key:
        raise DataError(f"sample key {key!r} contains '.' or '/', which WebDataset reads as an extension or folder: use e.g. '000123'")
    ext, data = image_entry(image)
    return {"__key__": key, ext: data, "cls": int(cls)}


def write_shards(samples: Iterable, pattern_dir: str, prefix: str, maxcount: int) -> list[str]:
    """Write (key, image, cls) samples to ``pattern_dir/prefix-000000.tar``, ... with at most
    ``maxcount`` samples each, using webdataset's ShardWriter; returns the shard paths."""
    if maxcount < 1:
        raise DataError(f"maxcount={maxcount} must be >= 1")
    os.makedirs(pattern_dir, exist_ok=True)
    written: list[str] = []
    pattern = os.path.join(pattern_dir, f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0, post=written.append) as sink:
        for key, image, cls in samples:
            sink.write(encode_sample(key, image, cls))
    return written


def shard_pattern(paths: list[str]) -> str:
    """The brace pattern naming ``paths`` as written by write_shards (consecutive numbers)."""
    if not paths:
        raise DataError("no shards were written: the source has no samples")
    directory, first = os.path.split(paths[0])
    prefix = first.rsplit("-", 1)[0]
    if len(paths) == 1:
        return paths[0]
    return os.path.join(directory, f"{prefix}-{{{0:06d}..{len(paths) - 1:06d}}}.tar")
