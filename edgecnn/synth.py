"""Deterministic synthetic image classes: shapes with random colour, position, scale, rotation and noise.

    synthesize("data/shapes", classes=5, per_class=200, size=64, seed=0)

Every class uses the same colour distributions, so no class can be told apart by mean colour: a model
has to learn edges and corners. The same seed gives the same files, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 4  # draw large, then shrink: antialiased edges


def _regular(n: int, radius: float, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star(radius: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.42
        angle = -math.pi / 2 + math.pi * k / 5
        points.append((r * math.cos(angle), r * math.sin(angle)))
    return points


def _cross(radius: float) -> list[tuple[float, float]]:
    a, b = radius, radius * 0.33
    return [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]


def _arrow(radius: float) -> list[tuple[float, float]]:
    a, s = radius, radius * 0.3
    return [(-a, -s), (0.1 * a, -s), (0.1 * a, -2.2 * s), (a, 0), (0.1 * a, 2.2 * s), (0.1 * a, s), (-a, s)]


# name -> polygon of the shape centred on the origin, or None for shapes drawn another way.
_POLYGONS: dict[str, Callable[[float], list[tuple[float, float]]] | None] = {
    "circle": None,
    "square": lambda r: _regular(4, r, math.pi / 4),
    "triangle": lambda r: _regular(3, r, -math.pi / 2),
    "star": _star,
    "cross": _cross,
    "ring": None,
    "hexagon": lambda r: _regular(6, r),
    "arrow": _arrow,
    "stripes": None,
    "checker": None,
}
CLASS_NAMES = tuple(_POLYGONS)


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    classes: tuple[str, ...]
    train_images: int
    val_images: int


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3)


def _contrasting(rng: np.random.Generator, other: np.ndarray) -> np.ndarray:
    while True:
        colour = _random_colour(rng)
        if np.abs(colour.astype(int) - other.astype(int)).sum() > 160:
            return colour


def render(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one image of ``shape`` on a noisy gradient background."""
    big = size * SUPERSAMPLE
    bg = _random_colour(rng)
    fg = _contrasting(rng, bg)
    # Background: a linear gradient between two nearby colours.
    bg2 = np.clip(bg.astype(int) + rng.integers(-60, 61, size=3), 0, 255)
    t = np.linspace(0.0, 1.0, big)[None, :, None]
    canvas = (bg[None, None, :] * (1 - t) + bg2[None, None, :] * t).repeat(big, axis=0)
    image = Image.fromarray(canvas.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)

    # A distractor line in a third colour, so that not every edge belongs to the shape.
    if rng.random() < 0.5:
        p = rng.uniform(0, big, size=4)
        draw.line([(p[0], p[1]), (p[2], p[3])], fill=tuple(int(v) for v in _random_colour(rng)), width=SUPERSAMPLE)

    radius = rng.uniform(0.22, 0.42) * big
    cx, cy = rng.uniform(radius, big - radius, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    fill = tuple(int(v) for v in fg)
    polygon = _POLYGONS[shape]
    if polygon is not None:
        cos, sin = math.cos(angle), math.sin(angle)
        points = [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in polygon(radius)]
        draw.polygon(points, fill=fill)
    elif shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=fill, width=int(radius * 0.3))
    else:  # textures inside a disc: stripes or a checkerboard at a random angle and period
        period = rng.uniform(0.18, 0.3) * radius * 2
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
        u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
        on = np.floor(u / period) % 2 == 0
        if shape == "checker":
            on = on ^ (np.floor(v / period) % 2 == 0)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        pixels = np.asarray(image).copy()
        pixels[on & inside] = fg
        image = Image.fromarray(pixels, "RGB")

    image = image.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    noise = rng.normal(0.0, rng.uniform(2.0, 12.0), size=(size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8), "RGB")


def synthesize(
    out_dir: str | Path,
    *,
    classes: int = 5,
    per_class: int = 200,
    size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> SynthSummary:
    """Write ``OUT/train/<class>/*.png`` and ``OUT/val/<class>/*.png``: ``per_class`` images per class in all."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"--classes must be between 2 and {len(CLASS_NAMES)}, got {classes}")
    if per_class < 5:
        raise ValueError(f"--per-class must be at least 5 (train and val both need images), got {per_class}")
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}")
    root = Path(out_dir)
    names = CLASS_NAMES[:classes]
    n_val = max(1, round(per_class * val_fraction))
    counts = {"train": 0, "val": 0}
    for class_index, name in enumerate(names):
        for split, offset, count in (("train", 0, per_class - n_val), ("val", 1, n_val)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, offset, class_index, i])
                render(name, size, rng).save(folder / f"{name}_{i:05d}.png", optimize=False, compress_level=1)
            counts[split] += count
    return SynthSummary(root, names, counts["train"], counts["val"])
