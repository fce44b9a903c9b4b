"""Procedural class-conditional images whose classes share low-level structure.

A fixed bank of primitives (oriented gratings and bars at several frequencies and
angles, checkers, rings, discs, crosses, dot lattices) is shared by every generated
task. A class is a fixed set of primitives; each image draws them, plus one
distractor primitive, as patches in random grid cells with jittered position, scale,
rotation, phase and random colours, over a noisy background with clutter strokes.
Colour, position and any single primitive carry little class information, so a
network must learn to detect the primitives and which combinations matter: features
learned on one task's classes are what another task's classes are made of, which is
what makes pretraining on a source task pay off on a small target task (measured by
bench/embedded_transfer_check.py).
Everything is vectorised numpy and a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (kind, angle in degrees, period in pixels at 32px). The bank is fixed: changing it
# changes every embedded dataset. Every primitive looks the same after a horizontal
# flip (no 45/135 degree pairs), so the standard flip augmentation never turns one
# class's primitive into another's.
PRIMITIVES: tuple[tuple[str, float, float], ...] = (
    *(("grating", 0, p) for p in (3.0, 4.5, 7.0)),
    *(("grating", 90, p) for p in (3.0, 4.5, 7.0)),
    ("bar", 0, 0.0),
    ("bar", 90, 0.0),
    ("cross", 0, 0.0),
    ("cross", 45, 0.0),
    ("checker", 0, 4.0),
    ("checker", 45, 6.0),
    ("rings", 0, 3.5),
    ("rings", 0, 6.0),
    ("disc", 0, 0.0),
    ("annulus", 0, 0.0),
    ("dots", 0, 4.0),
    ("chevron", 90, 4.5),
)
NUM_PRIMITIVES = len(PRIMITIVES)
GRID = 2  # primitives sit in cells of a GRID x GRID layout
# Bump whenever generated pixels change: embedded shards written by another version
# are regenerated (see embedded.materialize).
GENERATOR_VERSION = 1
UNIVERSE_SEED = 20240601


@dataclass(frozen=True)
class SynthTask:
    """A generated classification task: ``classes`` indexes CLASS_UNIVERSE."""

    classes: tuple[int, ...]
    train_per_class: int
    test_per_class: int
    seed: int


def _class_universe(per_class: int, size: int) -> tuple[tuple[int, ...], ...]:
    """Distinct primitive sets. The first NUM_PRIMITIVES sets use every primitive exactly
    ``per_class`` times, so a source task built from them covers the whole bank."""
    rng = np.random.default_rng(UNIVERSE_SEED)
    covering = NUM_PRIMITIVES
    while True:
        pool = np.concatenate([rng.permutation(NUM_PRIMITIVES) for _ in range(per_class)])
        sets = [tuple(sorted(int(p) for p in pool[i * per_class : (i + 1) * per_class])) for i in range(covering)]
        if all(len(set(s)) == per_class for s in sets) and len(set(sets)) == len(sets):
            break
    universe = list(sets)
    seen = set(universe)
    while len(universe) < size:
        s = tuple(sorted(int(p) for p in rng.choice(NUM_PRIMITIVES, per_class, replace=False)))
        if s not in seen:
            seen.add(s)
            universe.append(s)
    return tuple(universe)


PRIMITIVES_PER_CLASS = 2
CLASS_UNIVERSE = _class_universe(PRIMITIVES_PER_CLASS, 128)


def _primitive_masks(kind: str, period: float, u: np.ndarray, v: np.ndarray, phase: np.ndarray, radius: float) -> np.ndarray:
    """Intensity in [0, 1] of one primitive kind on rotated local coordinates (n, S, S)."""
    r = np.sqrt(u * u + v * v)
    ph = phase[:, None, None]
    if kind == "grating":
        return (np.cos(2 * np.pi * u / period + ph) > 0).astype(np.float32)
    if kind == "bar":
        return ((np.abs(v) < 0.2 * radius) & (np.abs(u) < 0.95 * radius)).astype(np.float32)
    if kind == "checker":
        return ((np.cos(2 * np.pi * u / period + ph) * np.cos(2 * np.pi * v / period + ph)) > 0).astype(np.float32)
    if kind == "rings":
        return (np.cos(2 * np.pi * r / period + ph) > 0).astype(np.float32)
    if kind == "disc":
        return (r < 0.7 * radius).astype(np.float32)
    if kind == "annulus":
        return (np.abs(r - 0.62 * radius) < 0.16 * radius).astype(np.float32)
    if kind == "cross":
        arm = 0.17 * radius
        return (((np.abs(u) < arm) | (np.abs(v) < arm)) & (r < 0.95 * radius)).astype(np.float32)
    if kind == "chevron":
        # Stripes bent into a V about the primitive's axis (u runs along it).
        return (np.cos(2 * np.pi * (u + 0.8 * np.abs(v)) / period + ph) > 0).astype(np.float32)
    if kind == "dots":
        return ((np.cos(2 * np.pi * u / period + ph) * np.cos(2 * np.pi * v / period + ph)) > 0.55).astype(np.float32)
    raise ValueError(kind)


def _colours_against(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random colours (n, 3) that differ clearly in brightness from their background."""
    n = len(background)
    hue = rng.uniform(0.2, 1.0, size=(n, 3))
    bg_lum = background.mean(axis=1)
    bright = bg_lum < 0.5
    level = np.where(bright, rng.uniform(0.65, 1.0, n), rng.uniform(0.0, 0.3, n))
    colour = hue / hue.max(axis=1, keepdims=True) * level[:, None]
    return colour.astype(np.float32)


def render(primitive_sets: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images (n, size, size, 3) uint8, one per row of ``primitive_sets`` (n, k)."""
    n, k = primitive_sets.shape
    scale = size / 32.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Background: a random colour, a faint random low-frequency wave, pixel noise.
    background = rng.uniform(0.0, 1.0, size=(n, 3)).astype(np.float32)
    wave_angle = rng.uniform(0, np.pi, n)[:, None, None]
    wave = 0.08 * np.sin((xs * np.cos(wave_angle) + ys * np.sin(wave_angle)) / (size / 4.0) + rng.uniform(0, 6.3, n)[:, None, None])
    images = background[:, None, None, :] + wave[..., None].astype(np.float32)

    cell = size / GRID
    radius = 0.5 * cell
    # Each sample puts its k primitives into k distinct cells (random per sample).
    cells = np.argsort(rng.random((n, GRID * GRID)), axis=1)[:, :k]
    for slot in range(k):
        cy = (cells[:, slot] // GRID + 0.5) * cell + rng.uniform(-1.5, 1.5, n) * scale
        cx = (cells[:, slot] % GRID + 0.5) * cell + rng.uniform(-1.5, 1.5, n) * scale
        jitter_scale = rng.uniform(0.85, 1.15, n)
        jitter_angle = np.deg2rad(rng.uniform(-12, 12, n))
        phase = rng.uniform(0, 2 * np.pi, n)
        colour = _colours_against(background, rng)
        for pid in np.unique(primitive_sets[:, slot]):
            rows = np.flatnonzero(primitive_sets[:, slot] == pid)
            kind, angle, period = PRIMITIVES[pid]
            theta = np.deg2rad(angle) + jitter_angle[rows]
            dx = (xs[None] - cx[rows, None, None]) / jitter_scale[rows, None, None]
            dy = (ys[None] - cy[rows, None, None]) / jitter_scale[rows, None, None]
            cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
            u, v = dx * cos + dy * sin, -dx * sin + dy * cos
            inside = np.sqrt(u * u + v * v) < radius
            mask = _primitive_masks(kind, period * scale, u, v, phase[rows], radius) * inside
            images[rows] = images[rows] * (1 - mask[..., None]) + mask[..., None] * colour[rows, None, None, :]

    # Clutter: two thin strokes per image at random places and angles.
    for _ in range(2):
        cy, cx = rng.uniform(0, size, n)[:, None, None], rng.uniform(0, size, n)[:, None, None]
        theta = rng.uniform(0, np.pi, n)[:, None, None]
        u = (xs - cx) * np.cos(theta) + (ys - cy) * np.sin(theta)
        v = -(xs - cx) * np.sin(theta) + (ys - cy) * np.cos(theta)
        stroke = ((np.abs(v) < 0.5 * scale) & (np.abs(u) < 5 * scale)).astype(np.float32)
        colour = rng.uniform(0, 1, (n, 3)).astype(np.float32)
        images = images * (1 - stroke[..., None]) + stroke[..., None] * colour[:, None, None, :]

    images += rng.normal(0, 0.05, images.shape).astype(np.float32)
    return (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)


def _distractors(task: SynthTask, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One extra primitive per sample that is neither in its class's set nor completes
    another class's set of this task together with one of the sample's own primitives,
    so a distractor never makes a sample look like a different class."""
    sets = [set(CLASS_UNIVERSE[c]) for c in task.classes]
    allowed = []
    for own in sets:
        banned = set(own)
        for other in sets:
            if other != own and len(other & own) == len(own) - 1:
                banned |= other - own
        allowed.append(np.array(sorted(set(range(NUM_PRIMITIVES)) - banned)))
    choice = rng.random(len(labels))
    return np.array([allowed[c][int(u * len(allowed[c]))] for c, u in zip(labels, choice)], dtype=np.int64)


def generate(task: SynthTask, split: str, size: int = 32, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, size, size, 3) uint8, labels (n,) int64) of a split, in random class order."""
    per_class = {"train": task.train_per_class, "test": task.test_per_class}[split]
    num_classes = len(task.classes)
    # Train and test come from unrelated streams of the same task seed.
    rng = np.random.default_rng([task.seed, 0 if split == "train" else 1, size])
    # Random order, so any contiguous piece (a shard) or strided slice holds every class.
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    sets = np.asarray([CLASS_UNIVERSE[task.classes[c]] for c in labels], dtype=np.int64).reshape(len(labels), -1)
    sets = np.concatenate([sets, _distractors(task, labels, rng)[:, None]], axis=1)
    # Shuffle the slot order so neither a class primitive nor the distractor owns a slot.
    sets = np.take_along_axis(sets, np.argsort(rng.random(sets.shape), axis=1), axis=1)
    if not len(labels):
        return np.zeros((0, size, size, 3), np.uint8), labels.astype(np.int64)
    images = np.concatenate([render(sets[i : i + chunk], size, rng) for i in range(0, len(labels), chunk)])
    return images, labels.astype(np.int64)
