"""See inside a model: its first-layer kernels, deeper kernel magnitudes, feature maps and softmax.

    written = visualize("runs/shapes/best.pt", "viz/", image="cat.jpg")   # kernels.png, features_*.png,
                                                                           # softmax.png, index.html

A ``.pt`` checkpoint shows everything; an ``.onnx`` model shows what its graph holds (the exported
weights, with BatchNorm folded in, and the activations onnxruntime computes). Every picture is drawn
with Pillow (edgecnn.plot), and every tile is either informative or labelled as flat.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .fileio import atomic_path, atomic_write_text
from .plot import AXIS, bar_chart, colormap, flat_tile, font, hstack, image_grid, text_size
from .runtime.decode import margin as softmax_margin
from .runtime.spec import PreprocessSpec

MAX_CHANNELS = 64  # feature-map tiles per picture; wider layers show their strongest channels
MAX_DEPTHS = 4  # feature-map pictures per image, spread from the first stage to the last
MAX_DEEP_LAYERS = 12  # kernel-magnitude tiles in kernels.png
MAX_BARS = 10  # softmax bars; the rest are summed into one "others" bar
CONFIDENT_MARGIN = 0.5  # margin to the runner-up from which an answer is called confident
AMBIGUOUS_MARGIN = 0.15  # below this margin the answer is a near coin toss


class VisualizeError(ValueError):
    """An input that cannot be visualized; the message names the file and the fix."""


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


@dataclass
class ModelView:
    """What a model lets us see, independent of its file format."""

    source: str  # "pt" or "onnx"
    spec: PreprocessSpec
    first_kernels: np.ndarray  # (out, in, k, k), as applied to the normalized input
    first_name: str
    deep_kernels: list[tuple[str, np.ndarray, int]]  # (layer name, weights (out, in/groups, k, k), groups)
    kernel_note: str  # what the first-layer weights are (BatchNorm folded? normalization undone?)
    run: Any  # pixels (H, W, 3) uint8 -> (activations [(name, caption, (C, H, W))], probabilities (classes,))


# ---------------------------------------------------------------------------------------------- pictures


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
    verdict = "confident" if m >= CONFIDENT_MARGIN else "ambiguous" if m < AMBIGUOUS_MARGIN else "unsure"
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


# ------------------------------------------------------------------------------------------------ models


def _fold_bn(weight: np.ndarray, bn: Any) -> np.ndarray:
    scale = (bn.weight.detach() / (bn.running_var.detach() + bn.eps).sqrt()).cpu().numpy()
    return weight * scale.reshape(-1, 1, 1, 1)


def _torch_view(path: Path) -> ModelView:
    import torch
    import torch.nn as nn

    from .checkpoint import load_checkpoint
    from .train import pixels_to_tensor

    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    spec = ckpt.spec
    modules = list(model.named_modules())
    convs: list[tuple[str, np.ndarray, int]] = []
    for k, (name, module) in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach().cpu().numpy().astype(np.float32)
            nxt = modules[k + 1][1] if k + 1 < len(modules) else None
            # Show the filter the network applies: BatchNorm's per-channel scale folded in, as export does.
            if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == w.shape[0]:
                w = _fold_bn(w, nxt)
            convs.append((name, w, module.groups))
    if not convs:
        raise VisualizeError(f"{path}: {ckpt.arch} has no convolution to show")
    stages = list(model.features) if hasattr(model, "features") else []

    def run(pixels: np.ndarray) -> tuple[list[tuple[str, str, np.ndarray]], np.ndarray]:
        depth = _depths(len(stages))
        grabbed: dict[int, np.ndarray] = {}
        hooks = [stages[i].register_forward_hook(lambda _m, _i, out, i=i: grabbed.__setitem__(i, out[0].detach().clone().numpy()))
                 for i in depth]
        try:
            with torch.no_grad():
                logits = model(pixels_to_tensor(torch.from_numpy(np.ascontiguousarray(pixels[None]).copy()), spec, torch.device("cpu")))
        finally:
            for h in hooks:
                h.remove()
        acts = [(f"stage{i + 1}", f"features[{i}] ({type(stages[i]).__name__}, stage {i + 1} of {len(stages)})", grabbed[i])
                for i in depth]
        return acts, torch.softmax(logits, 1)[0].numpy()

    return ModelView("pt", spec, convs[0][1], convs[0][0], convs[1:],
                     "BatchNorm folded in, as applied to the normalized input", run)


def _depths(n: int) -> list[int]:
    """Up to MAX_DEPTHS layer indices from the first to the last, evenly spread."""
    if n <= MAX_DEPTHS:
        return list(range(n))
    return np.unique(np.linspace(0, n - 1, MAX_DEPTHS).round().astype(int)).tolist()


def _onnx_view(path: Path) -> ModelView:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from .runtime.session import session_options
    from .runtime.spec import INPUT_UINT8_NHWC, META_INPUT, META_SPEC

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError and friends for a file that is not ONNX
        raise VisualizeError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        _load_external_data_inside(model, path)
    meta = {p.key: p.value for p in model.metadata_props}
    if META_SPEC not in meta:
        raise VisualizeError(f"{path}: no {META_SPEC} metadata; visualize models written by `edgecnn export`")
    spec = PreprocessSpec.from_json(meta[META_SPEC])
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}

    def weight_of(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name]).astype(np.float32)
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
            # A QDQ-quantized model stores int8 weights; show them as the model dequantizes them.
            q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zero = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
                    if len(node.input) > 2 and node.input[2] in inits else np.zeros_like(scale))
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.ndim == 1 and scale.size > 1:
                shape[axis] = scale.size
            return (q - zero.reshape(shape)) * scale.reshape(shape)
        return None

    convs: list[tuple[str, np.ndarray, int, Any]] = []
    for node in graph.node:
        if node.op_type == "Conv":
            w = weight_of(node.input[1])
            if w is not None and w.ndim == 4:
                groups = next((a.i for a in node.attribute if a.name == "group"), 1)
                convs.append((f"conv{len(convs) + 1}", w, groups, node))  # exported node names say little
    if not convs:
        if any(n.op_type in ("ConvInteger", "QLinearConv") for n in graph.node):
            raise VisualizeError(f"{path}: integer-only convolutions (dynamic or QOperator quantization) hide their "
                                 "weights; visualize the float model it came from, or a static (QDQ) quantized one")
        raise VisualizeError(f"{path}: no Conv with constant weights in the graph")
    first_name, first, _, first_node = convs[0]
    note = "as stored in the ONNX graph (BatchNorm folded in)"
    if meta.get(META_INPUT) == INPUT_UINT8_NHWC and _scale_folded(first_node, producers):
        # Export folded 1/(255*std) into these weights; undo it so the tiles match the .pt view.
        first = first * (np.asarray(spec.std, np.float32) * 255.0).reshape(1, -1, 1, 1)
        note = "ONNX weights, BatchNorm folded; the input scaling folded in by export is undone"

    # Activations: Relu outputs (or Conv outputs where a quantized graph has no Relu), as extra graph outputs.
    # In a QDQ graph most ReLUs are absorbed by the quantization, and the first convolution may stay float
    # with its ReLU: take each convolution's activation, whichever form it has.
    quantized = any(n.op_type == "QuantizeLinear" for n in graph.node)
    relus = [n.output[0] for n in graph.node if n.op_type == "Relu"]
    candidates = [_activation(c[3], graph) for c in convs] if quantized or not relus else relus
    inferred = onnx.shape_inference.infer_shapes(model)
    known = [*inferred.graph.value_info, *inferred.graph.output]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in known}
    dtypes = {v.name: v.type.tensor_type.elem_type for v in known}  # fp16 models have float16 activations
    candidates = [c for c in candidates if ranks.get(c, 4) == 4]
    chosen = [candidates[i] for i in _depths(len(candidates))]
    existing = {o.name for o in graph.output}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in chosen:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, dtypes.get(name) or onnx.TensorProto.FLOAT, None))
    try:
        session = ort.InferenceSession(probe.SerializeToString(), sess_options=session_options(1),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for every kind of bad graph
        raise VisualizeError(f"{path}: onnxruntime cannot run it with the extra outputs ({str(exc).splitlines()[0]})") from None
    inp = session.get_inputs()[0]
    out_names = [o.name for o in session.get_outputs()]
    prob_name = "probabilities" if "probabilities" in out_names else out_names[0]
    kind = "Relu" if relus and not quantized else "Conv"

    def run(pixels: np.ndarray) -> tuple[list[tuple[str, str, np.ndarray]], np.ndarray]:
        from .runtime.decode import looks_like_probabilities, softmax
        from .runtime.preprocess import to_model_input

        if inp.type == "tensor(uint8)":
            x = pixels[None]
            if inp.shape[1] == 3:
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        else:
            layout = "NCHW" if inp.shape[1] == 3 else "NHWC"
            x = to_model_input(pixels[None], spec, layout=layout, dtype="float16" if "float16" in inp.type else "float32")
        values = dict(zip(out_names, session.run(None, {inp.name: x}), strict=True))
        scores = np.asarray(values[prob_name], dtype=np.float32)
        probs = scores if looks_like_probabilities(scores) else softmax(scores)
        acts = [(f"{kind.lower()}{candidates.index(n) + 1}",
                 f"{kind} output {n!r}" + (" as int8 (ReLU folded into the quantization)"
                                           if producers.get(n) is not None and producers[n].op_type == "DequantizeLinear" else ""),
                 np.asarray(values[n], np.float32)[0])
                for n in chosen]
        return acts, probs[0]

    return ModelView("onnx", spec, first, first_name, [(n, w, g) for n, w, g, _ in convs[1:]], note, run)


def _activation(conv: Any, graph: Any) -> str:
    """A convolution's activation: the ReLU after it when the graph kept one, else its (dequantized) output."""
    out = _dequantized(conv.output[0], graph)
    relu = next((n for n in graph.node if n.op_type == "Relu" and out in n.input), None)
    return relu.output[0] if relu is not None else out


def _dequantized(name: str, graph: Any) -> str:
    """In a QDQ graph the ReLU is folded into the Conv's QuantizeLinear; the activation is what comes out of it."""
    users = [n for n in graph.node if name in n.input]
    if len(users) == 1 and users[0].op_type == "QuantizeLinear":
        after = [n for n in graph.node if users[0].output[0] in n.input]
        if len(after) == 1 and after[0].op_type == "DequantizeLinear":
            return after[0].output[0]
    return name


def _scale_folded(conv: Any, producers: dict[str, Any]) -> bool:
    """True when the path from the input to ``conv`` subtracts the mean but never scales (export folded it)."""
    name = conv.input[0]
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return False
        if node.op_type in ("Mul", "Div"):
            return False
        if node.op_type == "Sub":
            return True
        name = node.input[0]
    return False


def _load_external_data_inside(model: Any, path: Path) -> None:
    """Read external tensors only from files inside the model's own folder."""
    from onnx.external_data_helper import load_external_data_for_model

    folder = path.resolve().parent
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                target = (folder / entry.value).resolve()
                if folder not in target.parents:
                    raise VisualizeError(f"{path}: external data {entry.value!r} lies outside the model's folder; refusing to read it")
    load_external_data_for_model(model, str(folder))


def load_view(model_path: str | os.PathLike) -> ModelView:
    """Open a ``.pt`` checkpoint or an ``.onnx`` model for visualization."""
    path = Path(model_path)
    if not path.is_file():
        raise VisualizeError(f"{path}: no such model file")
    if path.suffix in (".pt", ".pth"):
        return _torch_view(path)
    if path.suffix == ".onnx":
        return _onnx_view(path)
    raise VisualizeError(f"{path}: expected a .pt checkpoint or an .onnx model")


# --------------------------------------------------------------------------------------------------- html


def check_references(folder: str | os.PathLike, files: Sequence[str]) -> None:
    """Every file a page shows must exist beside it, under a relative path (the page must work offline)."""
    bad = [f for f in files if Path(f).is_absolute() or ".." in Path(f).parts or "://" in f]
    missing = [f for f in files if not (Path(folder) / f).is_file()]
    assert not bad and not missing, f"page would reference {bad or missing}"


def figure(file: str, caption: str, *, width: int | None = None) -> str:
    style = f' style="width:{width}px"' if width else ""
    return (f'<figure><img src="{html.escape(file)}" alt="{html.escape(caption)}"{style}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_page(title: str, body: str) -> str:
    """A self-contained page: inline style, no scripts, no external assets."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
figure {{ margin: 0 0 2em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #555; margin-top: .3em; max-width: 60em; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 1em; }} .gallery figure {{ margin: 0; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }} td, th {{ padding: 2px 12px 2px 0; text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def write_index(out_dir: str | os.PathLike, entries: Sequence[tuple[str, str]], *, title: str,
                intro: str = "", name: str = "index.html") -> Path:
    """An offline HTML page showing each (relative file, caption) pair; every file must exist."""
    check_references(out_dir, [f for f, _ in entries])
    target = Path(out_dir) / name
    atomic_write_text(target, html_page(title, intro + "\n" + "\n".join(figure(f, c) for f, c in entries)))
    return target


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"


def visualize(model_path: str | os.PathLike, out_dir: str | os.PathLike, *,
              image: str | os.PathLike | None = None) -> list[Path]:
    """Write kernels.png (and, with ``image``, features_<layer>.png and softmax.png) and index.html.

    Returns the written files, index.html last.
    """
    from .runtime.preprocess import preprocess

    view = load_view(model_path)
    pixels = None
    if image is not None:
        if not Path(image).is_file():
            raise VisualizeError(f"{image}: no such image file")
        pixels = preprocess(image, view.spec)  # raises ImageError naming the file for an unreadable one
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[str, str]] = []
    render_kernels(view).save(out / "kernels.png")
    entries.append(("kernels.png", f"Learned kernels. Top: the first convolution's {view.first_kernels.shape[0]} "
                                   f"filters, in colour ({view.kernel_note}); they respond to edges and colour blobs. "
                                   "Below: how strongly each deeper filter reads each input channel."))
    if pixels is not None:
        acts, probs = view.run(pixels)
        for name, caption, maps in acts:
            file = f"features_{_slug(name)}.png"
            render_features(name, caption, maps, pixels=pixels).save(out / file)
            entries.append((file, f"Feature maps at {name} ({caption}): early layers respond to edges and colours, "
                                  "later ones to parts and whole shapes, at lower resolution."))
        picture, sv = render_softmax(probs, view.spec.labels, pixels=pixels, title=f"softmax for {Path(image).name}")
        picture.save(out / "softmax.png")
        entries.append(("softmax.png", f"Class probabilities: {sv.winner} at {sv.probs[0]:.1%}, margin {sv.margin:.2f} "
                                       f"to the runner-up ({sv.verdict})."))
    intro = (f"<p>Model <code>{html.escape(str(model_path))}</code> ({view.source}), input "
             f"{view.spec.size}x{view.spec.size}, classes: {html.escape(', '.join(view.spec.labels))}"
             + (f"; image <code>{html.escape(str(image))}</code>" if image is not None else "") + ".</p>")
    index = write_index(out, entries, title=f"Inside {Path(model_path).name}", intro=intro)
    return [out / f for f, _ in entries] + [index]
