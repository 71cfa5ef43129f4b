"""Reading an exported ONNX graph for visualization: constant weights (dequantized), stage outputs, folded scaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .stages import block_of, stage_blocks, weight_module

if TYPE_CHECKING:
    from onnx import GraphProto, NodeProto, TensorProto


def constant_weight(name: str, inits: dict[str, TensorProto], producers: dict[str, NodeProto]) -> np.ndarray | None:
    """The float32 value of a constant input: an initializer, or an int8 one behind a DequantizeLinear; else None."""
    from onnx import numpy_helper

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


# Ops that pass a value on without changing which layer it belongs to: quantization round trips (a QDQ
# graph's Q/DQ pairs), activations the quantizer folds into the Conv's QuantizeLinear, and FP16 casts.
PASS_THROUGH = frozenset({"QuantizeLinear", "DequantizeLinear", "Relu", "Clip", "Cast"})
# Ops that keep a map's shape, value by value: the activations and residual sums that end a block. After the
# last stage they belong to it; the first other op (pooling, Flatten) starts the classifier.
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu",
                         "PRelu", "Elu", "Selu", "Gelu", "Mish", "Softplus", "Erf", "BatchNormalization"})


@dataclass(frozen=True)
class StagePoint:
    """Where one stage's output lies in an ONNX graph."""

    index: int  # the stage's ordinal (stage_blocks' order), or the convolution's, without torch's weight names
    block: str | None  # the stage's module path ("features.4", "layer3"); None: no torch names, a convolution
    count: int  # how many stages (or convolutions) the graph has, shown or not
    tensor: str  # the tensor shown: after the activation, and after the Q/DQ pair in a quantized graph
    quantized: bool  # the tensor is a DequantizeLinear output: int8 values, as the next layer reads them


def _weight_name(name: str, inits: set[str], producers: dict[str, NodeProto]) -> str:
    """The initializer behind a weight input (through a DequantizeLinear or Cast), else the input's own name."""
    for _ in range(4):
        if name in inits or name not in producers or not producers[name].input:
            break
        name = producers[name].input[0]
    return name


def stage_points(graph: GraphProto) -> list[StagePoint]:
    """Each stage's output tensor, first stage first; the same points in an FP32 graph and its INT8/FP16 forms.

    The matching rule: look through PASS_THROUGH ops (so a Q/DQ pair, a Relu folded into quantization
    and a Cast all leave a value the same), and walk the remaining nodes in graph order keeping the set
    of values still waiting for a consumer; where that set shrinks to one value, the whole network
    passes through it (a cut). A stage is a block of stages.stage_blocks, found from its convolutions'
    weight names (torch's parameter names, kept by export and by the quantizer: ``features.4.…`` is
    block features.4, ``layer3.0.conv1.weight`` block layer3). Its output is the last cut after its last
    convolution and before the next stage's first, so that what runs between two blocks (resnet18's
    maxpool after conv1, ShuffleNet's channel shuffle) ends the earlier one, as in the .pt view; after
    the last stage, the last cut reached through ELEMENTWISE ops only (its activation, not the pooling).
    A graph without such names counts each convolution as a stage. Quantizing adds and removes only
    PASS_THROUGH ops, so the FP32 and the quantized graph of one model give the same points, and the
    shown tensor is the value after the activation (after its Q/DQ pair: what the next layer reads).
    """
    inits = {t.name for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    const = set(inits)
    for node in graph.node:  # graph order is topological: a constant's inputs come first
        if all(not i or i in const for i in node.input):
            const.update(node.output)
    root: dict[str, str] = {}  # a value -> the value it passes on unchanged (PASS_THROUGH ops looked through)
    consumers: dict[str, list[NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        if node.op_type in PASS_THROUGH and node.input and node.input[0] not in const:
            for out in node.output:
                root[out] = root.get(node.input[0], node.input[0])
    outputs = {o.name for o in graph.output}

    def shown(value: str) -> str:
        while value not in outputs and len(users := consumers.get(value, [])) == 1 and users[0].op_type in PASS_THROUGH:
            value = users[0].output[0]
        return value

    real = [n for n in graph.node if not (n.op_type in PASS_THROUGH or all(o in const for o in n.output))]
    convs = [(k, n) for k, n in enumerate(real) if n.op_type == "Conv" and len(n.input) > 1]
    modules = {k: m for k, n in convs if (m := weight_module(_weight_name(n.input[1], inits, producers)))}
    blocks = stage_blocks(modules[k] for k in sorted(modules))
    stage_of = {k: blocks.index(block_of(m)) for k, m in modules.items() if block_of(m) in blocks}
    named = bool(stage_of)
    if not named:
        stage_of = {k: j for j, (k, _) in enumerate(convs)}
    pending: dict[str, int] = {}
    for node in real:
        for value in {root.get(i, i) for i in node.input if i and i not in const}:
            pending[value] = pending.get(value, 0) + 1
    live: set[str] = set()
    cuts: list[tuple[int, str]] = []  # (position among the real nodes, value)
    for k, node in enumerate(real):
        for value in {root.get(i, i) for i in node.input if i and i not in const}:
            pending[value] -= 1
            if not pending[value]:
                live.discard(value)
        made = [root.get(o, o) for o in node.output if o and pending.get(root.get(o, o), 0)]
        live.update(made)
        if len(made) == 1 and live == set(made):
            cuts.append((k, made[0]))
    count = len(set(stage_of.values()))
    points = []
    for stage in sorted(set(stage_of.values())):
        last = max(k for k, s in stage_of.items() if s == stage)
        later = [s for k, s in stage_of.items() if k > last]
        if any(s < stage for s in later):
            continue  # stages out of order: no single point is "after this stage"
        end = min((k for k, s in stage_of.items() if s > stage),
                  default=next((k for k in range(last + 1, len(real)) if real[k].op_type not in ELEMENTWISE), len(real)))
        cut = next((v for k, v in reversed(cuts) if last <= k < end), None)
        if cut is not None:
            tensor = shown(cut)
            points.append(StagePoint(stage, blocks[stage] if named else None, count, tensor,
                                     tensor in producers and producers[tensor].op_type == "DequantizeLinear"))
    return points


def scale_folded(conv: NodeProto, producers: dict[str, NodeProto]) -> bool:
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
