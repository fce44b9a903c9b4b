"""One raw WebDataset sample (dict of bytes) to (HxWx3 uint8 array, label)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .errors import DataError
from .index import IMAGE_EXTENSIONS

SKIP_HINT = "re-create the shard (every sample needs an image and an integer 'cls') or pass skip_corrupt=True to skip such samples"


class CorruptSample(DataError):
    """A sample that cannot be used at all (skippable with skip_corrupt), unlike a config mismatch."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}: {fix}")
        self.problem = problem


def to_square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """RGB, shorter side resized to ``size``, centre-cropped to size x size."""
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def decode_sample(sample: dict, image_size: int, num_classes: int) -> tuple[np.ndarray, int]:
    where = f"sample '{sample.get('__key__')}' in shard {sample.get('__url__')}"
    ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
    if ext is None:
        raise CorruptSample(f"{where} has no image (.{', .'.join(IMAGE_EXTENSIONS)})", SKIP_HINT)
    if "cls" not in sample:
        raise CorruptSample(f"{where} has no 'cls' label", SKIP_HINT)
    try:
        label = int(bytes(sample["cls"]).decode("utf-8").strip())
    except ValueError:
        raise CorruptSample(f"{where}: 'cls' is not an integer", SKIP_HINT) from None
    if not 0 <= label < num_classes:
        raise DataError(f"label {label} of {where} is outside [0, {num_classes}): set num_classes to the dataset's class count or fix the labels")
    try:
        with Image.open(io.BytesIO(sample[ext])) as image:
            pixels = to_square_rgb(image, image_size)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptSample(f"{where}: .{ext} cannot be decoded ({exc})", SKIP_HINT) from None
    return pixels, label
