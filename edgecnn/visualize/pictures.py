"""Drawing a model's insides with Pillow (edgecnn.plot): kernel tiles, feature maps, softmax, FP32 vs INT8.

Every tile is either informative or labelled as flat; a Picture keeps each tile's box, so that callers
(and tests) can check what was drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_path
from ..plot import AXIS, bar_chart, colormap, flat_tile, font, hstack, image_grid, text_size, vstack
from ..runtime.decode import AMBIGUOUS_MARGIN as AMBIGUOUS_MARGIN  # re-exported by the package
from ..runtime.decode import DEFAULT_MIN_MARGIN
from ..runtime.decode import margin as softmax_margin
from ..runtime.decode import verdict as runtime_verdict
from .compare import LayerDiff
from .views import Activations, ModelView, VisualizeError

MAX_CHANNELS = 64  # feature-map tiles per picture; wider layers show their strongest channels
MAX_DEEP_LAYERS = 12  # kernel-magnitude tiles in kernels.png
MAX_BARS = 10  # softmax bars; the rest are summed into one "others" bar
CONFIDENT_MARGIN = DEFAULT_MIN_MARGIN  # the runtime's bands (runtime/policy.py), as classify and the bundle use


@dataclass(frozen=True)
class Tile:
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the picture
    label: str
    flat: bool = False  # the data were uniform (e.g. a dead ReLU channel): drawn hatched and labelled


@dataclass
class Picture:
    """A rendered picture and where its tiles are, so that callers (and tests) can check them."""

    image: Image.Image
    tiles: list[Tile] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_path(path) as tmp:
            self.image.save(tmp, format="PNG")
        return Path(path)


@dataclass(frozen=True)
class SoftmaxView:
    labels: tuple[str, ...]  # the bars drawn, most probable first ("N others" last when classes were summed)
    probs: tuple[float, ...]  # their lengths; they sum to one
    winner: str
    runner_up: str | None
    margin: float  # winner's probability minus the runner-up's
    verdict: str  # "confident", "unsure" or "ambiguous"


def _normalize01(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """Scale to [0, 1]; returns (scaled, flat) where flat means every value was the same."""
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not np.isfinite(lo) or hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros_like(a, dtype=np.float32), True
    return ((a - lo) / (hi - lo)).astype(np.float32), False


def _upscale(array: np.ndarray, target: int) -> Image.Image:
    """An (H, W) or (H, W, 3) uint8 array as an image scaled by a whole factor (NEAREST keeps pixels crisp)."""
    image = Image.fromarray(array)
    factor = max(1, round(target / max(image.width, image.height)))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _fit(array: np.ndarray, box: int) -> Image.Image:
    """Scale an array image to fit ``box`` pixels on its longer side: whole-factor up, or area-average down."""
    image = Image.fromarray(array)
    longest = max(image.width, image.height)
    if longest <= box:
        factor = box // longest
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    scale = box / longest
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX)


def _tiles_of(boxes: Sequence[tuple[int, int, int, int]], labels: Sequence[str], flat: Sequence[bool],
              dx: int = 0, dy: int = 0) -> list[Tile]:
    return [Tile((b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy), label, f) for b, label, f in zip(boxes, labels, flat, strict=True)]


def render_kernels(view: ModelView, *, tile: int = 42) -> Picture:
    """The first convolution's kernels as RGB tiles, then one heat tile of kernel magnitudes per deeper layer."""
    w = view.first_kernels
    tiles, labels, flat = [], [], []
    for i, kernel in enumerate(w):
        k = kernel if kernel.shape[0] == 3 else np.repeat(kernel.mean(0, keepdims=True), 3, axis=0)
        scaled, is_flat = _normalize01(k.transpose(1, 2, 0))
        tiles.append(flat_tile((tile, tile), "flat") if is_flat else _upscale((scaled * 255).round().astype(np.uint8), tile))
        labels.append(str(i))
        flat.append(is_flat)
    out, in_, kh, kw = w.shape
    first, boxes = image_grid(
        tiles, labels, columns=min(16, out),
        title=f"first convolution ({view.first_name}): {out} kernels, {kh}x{kw} over {'RGB' if in_ == 3 else f'{in_} channels'}",
        subtitle=f"each kernel stretched to its own min..max; {view.kernel_note}",
    )
    parts = [(first, _tiles_of(boxes, labels, flat))]

    if view.deep_kernels:
        layers = view.deep_kernels
        if len(layers) > MAX_DEEP_LAYERS:
            keep = np.unique(np.linspace(0, len(layers) - 1, MAX_DEEP_LAYERS).round().astype(int))
            layers = [layers[i] for i in keep]
        tiles, labels, flat = [], [], []
        for name, weight, groups in layers:
            mags = np.sqrt((weight.astype(np.float64) ** 2).sum(axis=(2, 3)))  # (out, in/groups)
            kind = f"{weight.shape[2]}x{weight.shape[3]}"
            if groups > 1 and weight.shape[1] == 1:
                # Depthwise: one filter per channel, so one cell each, wrapped into a square (blank = no channel).
                cols = int(np.ceil(np.sqrt(mags.shape[0])))
                grid = np.full((-(-mags.shape[0] // cols)) * cols, np.nan)
                grid[: mags.shape[0]] = mags[:, 0]
                mags = grid.reshape(-1, cols)
                kind = f"depthwise {kind}, {weight.shape[0]} ch in rows of {cols}"
            else:
                kind = f"{weight.shape[0]} out x {weight.shape[1]} in, {kind}"
            peak = float(np.nanmax(mags))
            is_flat = _normalize01(mags)[1]
            scaled = mags / max(peak, 1e-12)  # from zero, not from the minimum: a dark cell is a weak kernel
            label = f"{name}: {kind}, max {peak:.2g}"
            tiles.append(flat_tile((120, 120), "flat") if is_flat else _fit(colormap(scaled), 150))
            labels.append(label)
            flat.append(is_flat)
        deep, boxes = image_grid(
            tiles, labels, columns=min(3, len(tiles)), label_size=11,
            title="kernel magnitudes of deeper convolutions",
            subtitle="L2 norm of each (output row, input column) kernel, each layer scaled to its own max "
                     "(dark = weak, yellow = strong)",
        )
        parts.append((deep, _tiles_of(boxes, labels, flat)))
    return _stack(parts)


def _stack(parts: list[tuple[Image.Image, list[Tile]]], gap: int = 16) -> Picture:
    """Pictures one above the other, centred, with their tiles' boxes moved along."""
    width = max(p.width for p, _ in parts)
    image = Image.new("RGB", (width, sum(p.height for p, _ in parts) + gap * (len(parts) - 1)), "white")
    tiles: list[Tile] = []
    y = 0
    for part, part_tiles in parts:
        dx = (width - part.width) // 2
        image.paste(part, (dx, y))
        tiles += [Tile((t.box[0] + dx, t.box[1] + y, t.box[2] + dx, t.box[3] + y), t.label, t.flat) for t in part_tiles]
        y += part.height + gap
    return Picture(image, tiles)


def render_features(name: str, caption: str, maps: np.ndarray, *, pixels: np.ndarray | None = None,
                    max_channels: int = MAX_CHANNELS, tile: int = 64) -> Picture:
    """Feature maps (C, H, W) of one layer as a grid of viridis tiles, each channel stretched to its own range.

    Channels whose map is uniform (a ReLU that never fired on this image) are drawn hatched and labelled
    "dead"; when a layer has more than ``max_channels`` channels, the most active ones are shown.
    """
    c, h, w = maps.shape
    spans = maps.reshape(c, -1).max(1) - maps.reshape(c, -1).min(1)
    dead = int((spans <= 1e-12).sum())
    order = list(range(c))
    note = f"{c} channels, {h}x{w}"
    if c > max_channels:
        order = sorted(np.argsort(-maps.reshape(c, -1).mean(1), kind="stable")[:max_channels].tolist())
        note += f"; the {max_channels} most active shown"
    if dead:
        note += f"; {dead} flat (dead) on this image"
    tiles, labels, flat = [], [], []
    for i in order:
        scaled, is_flat = _normalize01(maps[i])
        tiles.append(flat_tile((max(tile, 40), max(tile, 40)), "dead") if is_flat
                     else _upscale(colormap(scaled), tile))
        labels.append(f"c{i}")
        flat.append(is_flat)
    grid, boxes = image_grid(tiles, labels, columns=min(16, len(tiles)), title=f"feature maps of {name}",
                             subtitle=f"{caption}: {note}; each channel stretched to its own min..max")
    tiles_out = _tiles_of(boxes, labels, flat)
    if pixels is None:
        return Picture(grid, tiles_out)
    thumb = _input_panel(pixels, grid.height)
    return Picture(hstack([thumb, grid], gap=12), _tiles_of(boxes, labels, flat, dx=thumb.width + 12))


def _input_panel(pixels: np.ndarray, height: int, side: int = 128) -> Image.Image:
    """The model's view of the image (after resize and crop), with a caption, to sit beside a chart."""
    image = _fit(np.ascontiguousarray(pixels), side)
    panel = Image.new("RGB", (max(image.width, 110) + 16, max(height, image.height + 70)), "white")
    from PIL import ImageDraw

    draw = ImageDraw.Draw(panel)
    draw.text((8, 12), "input", fill="black", font=font(14))
    panel.paste(image, (8, 36))
    draw.text((8, 40 + image.height), f"{pixels.shape[1]}x{pixels.shape[0]}, as the model sees it",
              fill=AXIS, font=font(11))
    return panel


def softmax_view(probs: np.ndarray, labels: Sequence[str], *, max_bars: int = MAX_BARS) -> SoftmaxView:
    """The bars a softmax chart draws: classes by probability, the tail summed, and the verdict."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < -1e-6) or abs(p.sum() - 1.0) > 1e-3:
        raise VisualizeError(f"expected class probabilities that sum to one, got {np.round(p, 4).tolist()[:8]}")
    names = [labels[i] if i < len(labels) else str(i) for i in range(p.size)]
    order = np.argsort(-p, kind="stable")
    shown = order[:max_bars] if p.size > max_bars else order
    bar_labels = [names[i] for i in shown]
    bar_probs = [float(p[i]) for i in shown]
    if p.size > len(shown):
        bar_labels.append(f"{p.size - len(shown)} others")
        bar_probs.append(float(p[order[len(shown):]].sum()))
    m = softmax_margin(p)
    verdict = runtime_verdict(p)
    return SoftmaxView(tuple(bar_labels), tuple(bar_probs), names[order[0]],
                       names[order[1]] if p.size > 1 else None, m, verdict)


_VERDICT_COLOURS = {"confident": "#2ca02c", "unsure": "#ff7f0e", "ambiguous": "#d62728"}


def render_softmax(probs: np.ndarray, labels: Sequence[str], *, pixels: np.ndarray | None = None,
                   title: str = "class probabilities", true_label: str | None = None) -> tuple[Picture, SoftmaxView]:
    """Softmax bars, the winner highlighted, the margin written on, and a coloured verdict band.

    Green "confident" (margin >= 0.5), orange "unsure", red "ambiguous" (margin < 0.15): a clear
    answer and a coin toss do not look alike even in a thumbnail.
    """
    from PIL import ImageDraw

    view = softmax_view(probs, labels)
    runner = f" over {view.runner_up}" if view.runner_up else ""
    note = f"{view.winner} {view.probs[0]:.1%}, margin {view.margin:.2f}{runner}"
    if true_label is not None:
        note += f"  (true: {true_label})"
    shown = [f"{label} (true)" if label == true_label else label for label in view.labels]
    chart = bar_chart(shown, list(view.probs), title=title, highlight=0, note=note,
                      value_format="{:.1%}", vmax=1.0)
    band_h = 26
    image = Image.new("RGB", (chart.width, chart.height + band_h), "white")
    image.paste(chart, (0, band_h))
    draw = ImageDraw.Draw(image)
    colour = _VERDICT_COLOURS[view.verdict]
    draw.rectangle([0, 0, image.width, band_h - 4], fill=colour)
    text = f"{view.verdict.upper()}: {view.winner}" + ("" if view.verdict == "confident" else f" or {view.runner_up}?")
    tw, th = text_size(draw, text, 14)
    draw.text(((image.width - tw) / 2, (band_h - 4 - th) / 2 - 3), text, fill="white", font=font(14))
    if pixels is not None:
        image = hstack([_input_panel(pixels, image.height), image], gap=8)
    return Picture(image), view




COMPARE_CHANNELS = 8  # channels per layer in the FP32-vs-quantized picture: the most active in the reference


def _shared_scale(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def render_comparison(reference: Activations, acts: Activations, diffs: Sequence[LayerDiff],
                      reference_probs: np.ndarray, probs: np.ndarray, labels: Sequence[str], *,
                      reference_label: str, label: str, pixels: np.ndarray | None = None,
                      channels: int = COMPARE_CHANNELS, tile: int = 48) -> Picture:
    """Per layer, three rows: the reference's maps, the quantized model's and |difference|; then both softmaxes.

    The two maps of a channel share one colour scale (the reference's min..max), so any change shows;
    |difference| has its own scale per layer, up to its largest value (written in the subtitle against
    the reference's range), so it shows where the error lies even when it is small.
    """
    parts: list[tuple[Image.Image, list[Tile]]] = []
    for ref, act, diff in zip(reference, acts, diffs, strict=True):
        c = ref.maps.shape[0]
        order = sorted(np.argsort(-ref.maps.reshape(c, -1).mean(1), kind="stable")[:channels].tolist())
        rows: list[list[tuple[Image.Image, str, bool]]] = [[], [], []]
        error = np.abs(act.maps - ref.maps)
        peak = max(float(error.max()), 1e-12)
        for i in order:
            lo, hi = float(ref.maps[i].min()), float(ref.maps[i].max())
            flat = hi - lo <= 1e-12 * max(1.0, abs(hi))
            for row, (values, name) in enumerate(((ref.maps[i], reference_label), (act.maps[i], label))):
                image = (flat_tile((tile, tile), "dead") if flat
                         else _upscale(colormap(_shared_scale(values, lo, hi)), tile))
                rows[row].append((image, f"{name} c{i}", flat))
            rows[2].append((_upscale(colormap(error[i] / peak), tile), f"|diff| c{i}", False))
        cells = [cell for row in rows for cell in row]
        grid, boxes = image_grid(
            [t for t, _, _ in cells], [n for _, n, _ in cells], columns=len(order), label_size=10,
            title=f"{ref.name}: {reference_label} (top) / {label} (middle) / |difference| (bottom)",
            subtitle=f"relative error {diff.relative_error:.1%}, cosine {diff.cosine:.4f}; {min(channels, c)} most active "
                     f"of {c} channels, both maps on the {reference_label} map's range; |difference| 0..{peak:.2g} "
                     f"({peak / max(float(np.ptp(ref.maps)), 1e-12):.1%} of the layer's {reference_label} range)",
        )
        parts.append((grid, _tiles_of(boxes, [n for _, n, _ in cells], [f for _, _, f in cells])))
    charts = [render_softmax(p, labels, title=f"{name} softmax")[0].image
              for p, name in ((reference_probs, reference_label), (probs, label))]
    top_ref, top = int(np.argmax(reference_probs)), int(np.argmax(probs))
    note = (f"largest probability change {float(np.abs(np.asarray(probs) - np.asarray(reference_probs)).max()):.3f}; "
            + ("same top-1" if top_ref == top else "TOP-1 DIFFERS"))
    softmaxes = [hstack([_input_panel(pixels, charts[0].height), *charts], gap=12) if pixels is not None
                 else hstack(charts, gap=12)]
    from PIL import ImageDraw

    banner = Image.new("RGB", (softmaxes[0].width, 24), "white")
    ImageDraw.Draw(banner).text((8, 4), note, fill=AXIS, font=font(13))
    parts.append((vstack([banner, softmaxes[0]], gap=0), []))
    return _stack(parts)
