"""Deterministic synthetic image classes: shapes with random colour, position, scale, rotation and noise.

    synthesize("data/shapes", classes=5, per_class=200, size=64, seed=0)

Every class uses the same colour distributions, so no class can be told apart by mean colour: a model
has to learn edges and corners. The same seed gives the same files, byte for byte.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 4  # draw large, then shrink: antialiased edges
MARKER = ".edgecnn-synth.json"  # the parameters of the set in this folder: same ones rewrite it, others refuse
SPLITS = ("train", "val")


class SynthError(ValueError):
    """A folder synthesize will not write into; the message names it and the fix."""


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
    replaced: str | None = None  # what --force replaced: the earlier set's parameters


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
    force: bool = False,
) -> SynthSummary:
    """Write ``OUT/train/<class>/*.png`` and ``OUT/val/<class>/*.png``: ``per_class`` images per class in all.

    ``OUT`` must be empty, or hold the same synthetic set (rewritten, byte for byte the same). Another
    synthetic set there is replaced only with ``force``; a folder that is not a synthetic set never is, so
    that a dataset of real photos is not mixed with shapes or deleted.
    """
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"--classes must be between 2 and {len(CLASS_NAMES)}, got {classes}")
    if per_class < 5:
        raise ValueError(f"--per-class must be at least 5 (train and val both need images), got {per_class}")
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}")
    root = Path(out_dir)
    names = CLASS_NAMES[:classes]
    n_val = max(1, round(per_class * val_fraction))
    params = {"classes": classes, "per_class": per_class, "size": size, "seed": seed, "val_fraction": val_fraction}
    replaced = _prepare(root, params, force=force)
    # The marker goes first: an interrupted run leaves a folder that the same command completes.
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(json.dumps(params) + "\n")
    counts = {"train": 0, "val": 0}
    for class_index, name in enumerate(names):
        for split, offset, count in (("train", 0, per_class - n_val), ("val", 1, n_val)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, offset, class_index, i])
                render(name, size, rng).save(folder / f"{name}_{i:05d}.png", optimize=False, compress_level=1)
            counts[split] += count
    return SynthSummary(root, names, counts["train"], counts["val"], replaced)


def _describe(params: dict) -> str:
    return ", ".join(f"{k}={params[k]}" for k in ("classes", "per_class", "size", "seed") if k in params)


def _prepare(root: Path, params: dict, *, force: bool) -> str | None:
    """Check that ``root`` may receive the set ``params``; with ``force``, remove an earlier synthetic set."""
    if root.exists() and not root.is_dir():
        raise SynthError(f"{root}: exists and is not a folder; choose another output folder")
    entries = [p for p in root.iterdir() if not (p.name.startswith(".") and p.name != MARKER)] if root.is_dir() else []
    if not entries:
        return None
    earlier = _earlier_set(root)
    if earlier is None:
        shown = ", ".join(sorted(p.name for p in entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise SynthError(f"{root}: is not empty ({shown}) and is not a synthetic set of `edgecnn data synth`; "
                         "refusing to write shapes into it, even with --force; choose a new or empty folder")
    if earlier == params:
        return None  # the same set: rewriting it gives the same files
    if not force:
        what = _describe(earlier) or "made by an older edgecnn"
        raise SynthError(f"{root}: already holds a different synthetic set ({what}); pass --force to replace it, "
                         "or choose another folder")
    for name in (*SPLITS, MARKER):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return _describe(earlier) or "an earlier synthetic set"


_FILE_RE = re.compile(r"^([a-z]+)_\d{5}\.png$")


def _earlier_set(root: Path) -> dict | None:
    """The parameters of the synthetic set in ``root`` ({} for one made before the marker existed), else None."""
    marker = root / MARKER
    if marker.is_file():
        try:
            params = json.loads(marker.read_text())
        except (OSError, ValueError):
            params = None
        return params if isinstance(params, dict) else {}
    # Before the marker: only train/ and val/, holding class folders of CLASS_NAMES with their own file names.
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not visible or any(p.name not in SPLITS or not p.is_dir() for p in visible):
        return None
    for split in visible:
        for folder in split.iterdir():
            if folder.name not in CLASS_NAMES or not folder.is_dir():
                return None
            if any((m := _FILE_RE.match(f.name)) is None or m.group(1) != folder.name for f in folder.iterdir()):
                return None
    return {}
