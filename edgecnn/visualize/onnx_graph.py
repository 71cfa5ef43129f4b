"""Reading an exported ONNX graph for visualization: constant weights (dequantized), stage outputs, folded scaling."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

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
_STAGE_WEIGHT = re.compile(r"^features\.(\d+)\.")  # torch's parameter names survive export and quantization


@dataclass(frozen=True)
class StagePoint:
    """Where one stage's output lies in an ONNX graph."""

    index: int  # features[index] of the PyTorch model (or the convolution's ordinal, without such names)
    named: bool  # True: index comes from the weights' features.<i>. names, as the .pt view's stages
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
    passes through it (a cut). A stage is the set of convolutions whose weights are named
    ``features.<i>.…`` (torch's parameter names, kept by export and by the quantizer); its output is
    the first cut after its last convolution and before the next stage's first. A graph without such
    names counts each convolution as a stage. Quantizing adds and removes only PASS_THROUGH ops, so the
    FP32 and the quantized graph of one model give the same points, and the shown tensor is the value
    after the activation (after its Q/DQ pair: what the next layer reads).
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
    named = {k: int(m.group(1)) for k, n in convs
             if (m := _STAGE_WEIGHT.match(_weight_name(n.input[1], inits, producers)))}
    stage_of = named or {k: j for j, (k, _) in enumerate(convs)}
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
    points = []
    for stage in sorted(set(stage_of.values())):
        last = max(k for k, s in stage_of.items() if s == stage)
        later = [s for k, s in stage_of.items() if k > last]
        if any(s < stage for s in later):
            continue  # stages out of order: no single point is "after this stage"
        before = min((k for k, s in stage_of.items() if s > stage), default=len(real))
        cut = next((v for k, v in cuts if last <= k < before), None)
        if cut is not None:
            tensor = shown(cut)
            points.append(StagePoint(stage, bool(named), tensor,
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
