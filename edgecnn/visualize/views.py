"""What a model lets us see, whatever its file format: first-layer kernels, deeper kernels, a run on pixels.

    view = load_view("runs/shapes/best.pt")       # or an .onnx model
    activations, probabilities = view.run(pixels)  # pixels: (H, W, 3) uint8, preprocessed for view.spec

A ``.pt`` checkpoint runs in PyTorch with forward hooks; an ``.onnx`` model shows what its graph holds
(onnx_graph.py reads it) and runs in onnxruntime with its activations as extra outputs. Either way the
maps are the stages' outputs, named stage<N> for the N-th feature block (features[N-1] where the model has a
features Sequential; resnet18's conv1, layer1..layer4 otherwise: stages.py), so that formats can be compared.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..runtime.spec import PreprocessSpec
from .onnx_graph import StagePoint, constant_weight, scale_folded, stage_points
from .stages import stage_blocks, stage_caption, stage_name

if TYPE_CHECKING:
    import torch.nn as nn
    from onnx import ModelProto, NodeProto

MAX_DEPTHS = 4  # feature-map pictures per image, spread from the first stage to the last


class Activation(NamedTuple):
    """One layer's feature maps on one image, named alike for a .pt, an FP32 and a quantized ONNX model."""

    name: str  # "stage3": the third feature block (features[2], or resnet18's layer2), whatever the file format
    caption: str  # what the layer is, in words
    maps: np.ndarray  # (C, H, W) float32
    tensor: str  # where it was taken: the module path (.pt) or the ONNX tensor name (secondary detail)


Activations = list[Activation]  # per layer shown, first stage first


class VisualizeError(ValueError):
    """An input that cannot be visualized; the message names the file and the fix."""


@dataclass
class ModelView:
    """What a model lets us see, independent of its file format."""

    source: str  # "pt" or "onnx"
    precision: str  # "fp32", or the ONNX file's edgecnn.precision ("int8", "fp16", ...)
    spec: PreprocessSpec
    first_kernels: np.ndarray  # (out, in, k, k), as applied to the normalized input
    first_name: str
    deep_kernels: list[tuple[str, np.ndarray, int]]  # (layer name, weights (out, in/groups, k, k), groups)
    kernel_note: str  # what the first-layer weights are (BatchNorm folded? normalization undone?)
    run: Callable[[np.ndarray], tuple[Activations, np.ndarray]]  # pixels (H, W, 3) uint8 -> (activations, probabilities)


def _fold_bn(weight: np.ndarray, bn: nn.BatchNorm2d) -> np.ndarray:
    assert bn.running_var is not None, "the model families' BatchNorm layers track running statistics"
    scale = (bn.weight.detach() / (bn.running_var.detach() + bn.eps).sqrt()).cpu().numpy()
    return weight * scale.reshape(-1, 1, 1, 1)


def _torch_view(path: Path) -> ModelView:
    import torch
    import torch.nn as nn

    from ..checkpoint import load_checkpoint
    from ..models import model_info, pixels_to_tensor

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
    # The stages and their names come from the one rule the ONNX side applies to weight names (stages.py).
    blocks = stage_blocks((name for name, _, _ in convs), model_info(ckpt.arch).classifier)
    stages = _spans(model, blocks)

    def run(pixels: np.ndarray) -> tuple[Activations, np.ndarray]:
        depth = _depths(len(stages))
        grabbed: dict[int, tuple[str, np.ndarray]] = {}
        # Each module of the span records its output; the last one to run holds the stage's output.
        hooks = [module.register_forward_hook(
                     lambda _m, _i, out, k=k, path=path: grabbed.__setitem__(k, (path, out[0].detach().clone().numpy())))
                 for k in depth for path, module in stages[k]]
        try:
            with torch.no_grad():
                logits = model(pixels_to_tensor(torch.from_numpy(np.ascontiguousarray(pixels[None]).copy()), spec, torch.device("cpu")))
        finally:
            for h in hooks:
                h.remove()
        acts = [Activation(stage_name(k), stage_caption(blocks[k], k, len(blocks)) + _kinds(stages[k]), grabbed[k][1], grabbed[k][0])
                for k in depth]
        return acts, torch.softmax(logits, 1)[0].numpy()

    return ModelView("pt", "fp32", spec, convs[0][1], convs[0][0], convs[1:],
                     "BatchNorm folded in, as applied to the normalized input", run)


def _spans(model: nn.Module, blocks: list[str]) -> list[list[tuple[str, nn.Module]]]:
    """Per stage, its block and the siblings that run after it up to the next block (resnet18: conv1, bn1, relu,
    maxpool); the last stage is its block alone, what follows it being the classifier's pooling."""
    modules = dict(model.named_modules())
    spans = []
    for k, block in enumerate(blocks):
        parent = block.rpartition(".")[0]
        siblings = [(f"{parent}.{n}" if parent else n, m) for n, m in modules[parent].named_children()]
        paths = [p for p, _ in siblings]
        stop = paths.index(blocks[k + 1]) if k + 1 < len(blocks) and blocks[k + 1] in paths else paths.index(block) + 1
        spans.append(siblings[paths.index(block):stop])
    return spans


def _kinds(span: list[tuple[str, nn.Module]]) -> str:
    """What a stage is made of: " (ConvBNAct)"; " (Conv2d, then bn1, relu, maxpool)" where modules run after it."""
    then = ", then " + ", ".join(p for p, _ in span[1:]) if len(span) > 1 else ""
    return f" ({type(span[0][1]).__name__}{then})"


def _depths(n: int) -> list[int]:
    """Up to MAX_DEPTHS layer indices from the first to the last, evenly spread."""
    if n <= MAX_DEPTHS:
        return list(range(n))
    return np.unique(np.linspace(0, n - 1, MAX_DEPTHS).round().astype(int)).tolist()


def _onnx_view(path: Path) -> ModelView:
    import onnx

    from ..runtime import Classifier, ModelError
    from ..runtime.spec import INPUT_UINT8_NHWC, META_INPUT, META_PRECISION, META_SPEC

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

    convs: list[tuple[str, np.ndarray, int, NodeProto]] = []
    for node in graph.node:
        if node.op_type == "Conv":
            w = constant_weight(node.input[1], inits, producers)
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
    if meta.get(META_INPUT) == INPUT_UINT8_NHWC and scale_folded(first_node, producers):
        # Export folded 1/(255*std) into these weights; undo it so the tiles match the .pt view.
        first = first / np.asarray(spec.inv_std255, np.float32).reshape(1, -1, 1, 1)
        note = "ONNX weights, BatchNorm folded; the input scaling folded in by export is undone"

    # Feature maps: each stage's output, found alike in FP32 and quantized graphs (the rule: stage_points).
    inferred = onnx.shape_inference.infer_shapes(model)
    known = [*inferred.graph.value_info, *inferred.graph.output]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in known}
    dtypes = {v.name: v.type.tensor_type.elem_type for v in known}  # fp16 models have float16 activations
    points = [p for p in stage_points(graph) if ranks.get(p.tensor, 4) == 4]
    shown = [points[i] for i in _depths(len(points))]
    chosen = [p.tensor for p in shown]
    existing = {o.name for o in graph.output}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in chosen:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, dtypes.get(name) or onnx.TensorProto.FLOAT, None))
    # The runtime's Classifier runs it, so the probabilities shown are what `classify` answers for these pixels.
    try:
        clf = Classifier(probe, device="cpu", threads=1)
    except ModelError as exc:
        raise VisualizeError(f"{path}: onnxruntime cannot run it with the extra outputs ({exc})") from None

    def caption(p: StagePoint) -> str:
        where = (stage_caption(p.block, p.index, p.count) if p.block is not None
                 else f"output of convolution {p.index + 1} of {p.count}")
        return where + (", quantized to 8 bits as the next layer reads it" if p.quantized else "")

    def run(pixels: np.ndarray) -> tuple[Activations, np.ndarray]:
        probs = clf.predict_pixels(pixels[None])[0]
        batch = np.repeat(pixels[None], clf.fixed_batch or 1, axis=0)  # a fixed-batch graph takes its own batch
        values = clf.session.run(chosen, {clf.input_name: clf.model_input(batch)})
        acts = [Activation(stage_name(p.index) if p.block is not None else f"conv{p.index + 1}", caption(p),
                           np.asarray(v, np.float32)[0], p.tensor)
                for p, v in zip(shown, values, strict=True)]
        return acts, probs

    return ModelView("onnx", meta.get(META_PRECISION, "fp32"), spec, first, first_name, [(n, w, g) for n, w, g, _ in convs[1:]], note, run)


def _load_external_data_inside(model: ModelProto, path: Path) -> None:
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


