"""Charts drawn with Pillow alone (no matplotlib), so that any install can write its PNGs.

    line_chart({"train": [1.2, 0.8], "val": [1.1, 0.9]}, title="loss", xlabel="epoch").save("loss.png")
    hstack([chart_a, chart_b]).save("curves.png")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
HIGHLIGHT = "#1f77b4"  # the bar a chart points at (the winner): emphasis, not a verdict
GOOD = "#2ca02c"  # a highlighted bar that is good news (the fastest row)
BAD = "#d62728"  # red only for a bad outcome (a dead channel, a failed check)
MUTED = "#9db4d0"
AXIS = "#333333"
GRID = "#e3e3e3"


@lru_cache(maxsize=8)
def font(size: int = 14) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_size(draw: ImageDraw.ImageDraw, text: str, size: int = 14) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font(size))
    return int(right - left), int(bottom - top)  # whole pixels already (a FreeType font); the stubs say float


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-6:
        if t >= lo - step * 1e-6:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def line_chart(
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    x: Sequence[float] | None = None,
    size: tuple[int, int] = (560, 380),
    ylim: tuple[float, float] | None = None,
    legend: str = "top",
) -> Image.Image:
    """One or more lines against a shared x axis, with a legend (top or bottom right), ticks and a light grid."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 64, 16, 40, 52
    values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
    n = max((len(ys) for ys in series.values()), default=0)
    xs = list(x) if x is not None else list(range(1, n + 1))
    lo, hi = ylim if ylim else ((min(values), max(values)) if values else (0.0, 1.0))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo) if not ylim else 0.0
    lo, hi = lo - pad, hi + pad
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0, 1)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1

    def px(xv: float, yv: float) -> tuple[float, float]:
        return (
            left + (xv - x_lo) / (x_hi - x_lo) * (width - left - right),
            top + (1 - (yv - lo) / (hi - lo)) * (height - top - bottom),
        )

    for t in _nice_ticks(lo, hi):
        _, y = px(x_lo, t)
        draw.line([(left, y), (width - right, y)], fill=GRID)
        label = _fmt(t)
        tw, th = text_size(draw, label, 12)
        draw.text((left - 6 - tw, y - th / 2 - 2), label, fill=AXIS, font=font(12))
    for t in _nice_ticks(x_lo, x_hi, min(8, max(1, len(xs)))):
        xv, _ = px(t, lo)
        draw.line([(xv, height - bottom), (xv, height - bottom + 4)], fill=AXIS)
        label = _fmt(t)
        tw, _ = text_size(draw, label, 12)
        draw.text((xv - tw / 2, height - bottom + 6), label, fill=AXIS, font=font(12))
    draw.rectangle([left, top, width - right, height - bottom], outline=AXIS)

    for i, (name, ys) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = [px(xv, yv) for xv, yv in zip(xs, ys, strict=False) if yv is not None and math.isfinite(yv)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        for p in points:
            draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)
        # Legend at the right, top or bottom: wherever the curves are not (rising accuracy: bottom).
        tw, th = text_size(draw, name, 12)
        ly = top + 8 + i * 18 if legend == "top" else height - bottom - 8 - (len(series) - i) * 18
        draw.line([(width - right - tw - 36, ly + 7), (width - right - tw - 16, ly + 7)], fill=colour, width=3)
        draw.text((width - right - tw - 10, ly), name, fill=AXIS, font=font(12))

    tw, _ = text_size(draw, title, 16)
    draw.text(((width - tw) / 2, 10), title, fill="black", font=font(16))
    if xlabel:
        tw, _ = text_size(draw, xlabel, 13)
        draw.text(((width - tw) / 2, height - 22), xlabel, fill=AXIS, font=font(13))
    if ylabel:
        tag = Image.new("RGBA", (text_size(draw, ylabel, 13)[0] + 4, 18), (255, 255, 255, 0))
        ImageDraw.Draw(tag).text((2, 0), ylabel, fill=AXIS, font=font(13))
        rotated = tag.rotate(90, expand=True)
        image.paste(rotated, (6, top + (height - top - bottom - rotated.height) // 2), rotated)
    return image


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    highlight: int | None = None,
    note: str = "",
    value_format: str = "{:.3f}",
    size: tuple[int, int] | None = None,
    vmax: float | None = None,
    highlight_colour: str = HIGHLIGHT,
) -> Image.Image:
    """Horizontal bars, one per label, the ``highlight`` bar in ``highlight_colour``; ``note`` is written under
    the title. Pass GOOD for a winner and BAD for a bar that is bad news: red never marks good news."""
    row = 26
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((text_size(probe, s, 13)[0] for s in labels), default=40) + 16
    width = size[0] if size else max(480, label_w + 360)
    top = 44 + (22 if note else 0)
    height = size[1] if size else top + row * len(labels) + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    peak = vmax if vmax is not None else max([*values, 1e-12])
    bar_area = width - label_w - 90
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        tw, th = text_size(draw, label, 13)
        draw.text((label_w - 8 - tw, y + (row - th) / 2 - 3), label, fill=AXIS, font=font(13))
        length = max(0.0, value) / peak * bar_area
        colour = highlight_colour if i == highlight else MUTED
        draw.rectangle([label_w, y + 4, label_w + max(1.0, length), y + row - 4], fill=colour)
        draw.text((label_w + length + 6, y + 5), value_format.format(value), fill=AXIS, font=font(12))
    draw.line([(label_w, top), (label_w, top + row * len(labels))], fill=AXIS)
    tw, _ = text_size(draw, title, 16)
    draw.text(((width - tw) / 2, 10), title, fill="black", font=font(16))
    if note:
        tw, _ = text_size(draw, note, 13)
        draw.text(((width - tw) / 2, 36), note, fill=AXIS, font=font(13))
    return image


def heatmap(
    matrix: Sequence[Sequence[float]],
    labels: Sequence[str],
    *,
    title: str,
    xlabel: str = "predicted",
    ylabel: str = "true",
) -> Image.Image:
    """A square matrix (a confusion matrix) as shaded cells with their counts written in."""
    n = len(labels)
    cell = max(28, min(64, 520 // max(1, n)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((text_size(probe, s, 12)[0] for s in labels), default=30) + 14
    left, top = label_w + 24, 44 + label_w
    width, height = left + cell * n + 20, top + cell * n + 20
    image = Image.new("RGB", (max(width, 300), height), "white")
    draw = ImageDraw.Draw(image)
    peak = max((v for r in matrix for v in r), default=1) or 1
    for i in range(n):
        row_total = sum(matrix[i]) or 1
        for j in range(n):
            value = matrix[i][j]
            shade = value / row_total  # shade by row share, so small classes read as clearly as big ones
            base = (44, 160, 44) if i == j else (214, 39, 40)
            colour = tuple(int(255 - (255 - c) * shade) for c in base)
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=colour, outline=GRID)
            text = str(int(value)) if float(value).is_integer() else f"{value:.2f}"
            tw, th = text_size(draw, text, 12)
            ink = "white" if shade > 0.6 else AXIS
            draw.text((x0 + (cell - tw) / 2, y0 + (cell - th) / 2 - 2), text, fill=ink, font=font(12))
    for k, label in enumerate(labels):
        tw, th = text_size(draw, label, 12)
        draw.text((left - 6 - tw, top + k * cell + (cell - th) / 2 - 2), label, fill=AXIS, font=font(12))
        tag = Image.new("RGBA", (tw + 4, 18), (255, 255, 255, 0))
        ImageDraw.Draw(tag).text((2, 0), label, fill=AXIS, font=font(12))
        rotated = tag.rotate(90, expand=True)
        image.paste(rotated, (int(left + k * cell + (cell - rotated.width) / 2), top - 6 - rotated.height), rotated)
    tw, _ = text_size(draw, title, 16)
    draw.text(((image.width - tw) / 2, 10), title, fill="black", font=font(16))
    # ASCII only: Pillow's built-in font has no arrow glyphs and would draw boxes.
    draw.text((left, top + cell * n + 2), f"{xlabel} (columns)", fill=AXIS, font=font(12))
    draw.text((4, 30), f"{ylabel} (rows)", fill=AXIS, font=font(12))
    del peak
    return image


def hstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    height = max(im.height for im in images)
    out = Image.new("RGB", (width, height), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def vstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    width = max(im.width for im in images)
    height = sum(im.height for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, height), "white")
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + gap
    return out


# Viridis sampled at nine points (matplotlib's values): perceptually even, and readable in grey print.
_VIRIDIS = [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
            (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)]


def colormap(values: np.ndarray) -> np.ndarray:
    """Map an array of values in [0, 1] to viridis RGB (..., 3) uint8; NaN becomes white (no data)."""
    anchors = np.asarray(_VIRIDIS, dtype=np.float32)
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(anchors) - 1)
    lo = np.floor(v).astype(int).clip(0, len(anchors) - 2)
    frac = (v - lo)[..., None]
    rgb = anchors[lo] * (1 - frac) + anchors[lo + 1] * frac
    rgb[np.isnan(values)] = 255.0
    return rgb.round().astype(np.uint8)


def flat_tile(size: tuple[int, int], text: str) -> Image.Image:
    """A tile for data with nothing to show (a dead channel): grey, hatched, and saying so."""
    tile = Image.new("RGB", size, "#d9d9d9")
    draw = ImageDraw.Draw(tile)
    for offset in range(-size[1], size[0], 8):
        draw.line([(offset, size[1]), (offset + size[1], 0)], fill="#bdbdbd")
    tw, th = text_size(draw, text, 12)
    draw.rectangle([(size[0] - tw) / 2 - 3, (size[1] - th) / 2 - 3, (size[0] + tw) / 2 + 3, (size[1] + th) / 2 + 5],
                   fill="white")
    draw.text(((size[0] - tw) / 2, (size[1] - th) / 2 - 2), text, fill=BAD, font=font(12))
    return tile


def image_grid(
    tiles: Sequence[Image.Image],
    labels: Sequence[str],
    *,
    title: str,
    subtitle: str = "",
    columns: int | None = None,
    label_size: int = 11,
    gap: int = 6,
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Tiles in rows under a title, each with its label below; returns the picture and each tile's box.

    Tiles may differ in size; each cell is as large as the largest tile. The boxes (left, top, right,
    bottom) let a caller or a test find every tile again in the picture.
    """
    assert len(tiles) == len(labels), "one label per tile"
    n = len(tiles)
    columns = columns or max(1, min(n, math.ceil(math.sqrt(n * 1.6))))
    rows = max(1, math.ceil(n / columns))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_h = text_size(probe, "Ag0", label_size)[1] + 6 if any(labels) else 0
    label_w = max((text_size(probe, s, label_size)[0] for s in labels), default=0)
    cell_w = max([label_w + 4, *(t.width for t in tiles)]) if tiles else 40
    cell_h = max((t.height for t in tiles), default=40) + label_h
    top = 40 + (20 if subtitle else 0)
    width = max(16 + columns * (cell_w + gap), text_size(probe, title, 16)[0] + 24,
                text_size(probe, subtitle, 13)[0] + 24)
    height = top + rows * (cell_h + gap) + 8
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    x0 = (width - columns * (cell_w + gap) + gap) // 2
    for k, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        r, c = divmod(k, columns)
        x = x0 + c * (cell_w + gap) + (cell_w - tile.width) // 2
        y = top + r * (cell_h + gap)
        image.paste(tile, (x, y))
        boxes.append((x, y, x + tile.width, y + tile.height))
        if label:
            tw, _ = text_size(draw, label, label_size)
            draw.text((x + (tile.width - tw) / 2, y + tile.height + 2), label, fill=AXIS, font=font(label_size))
    tw, _ = text_size(draw, title, 16)
    draw.text(((width - tw) / 2, 10), title, fill="black", font=font(16))
    if subtitle:
        tw, _ = text_size(draw, subtitle, 13)
        draw.text(((width - tw) / 2, 34), subtitle, fill=AXIS, font=font(13))
    return image, boxes
