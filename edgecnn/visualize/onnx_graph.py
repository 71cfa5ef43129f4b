"""Reading an exported ONNX graph for visualization: constant weights (dequantized), activations, folded scaling."""

from __future__ import annotations

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


def activation(conv: NodeProto, graph: GraphProto) -> str:
    """A convolution's activation: the ReLU after it when the graph kept one, else its (dequantized) output."""
    out = dequantized(conv.output[0], graph)
    relu = next((n for n in graph.node if n.op_type == "Relu" and out in n.input), None)
    return relu.output[0] if relu is not None else out


def dequantized(name: str, graph: GraphProto) -> str:
    """In a QDQ graph the ReLU is folded into the Conv's QuantizeLinear; the activation is what comes out of it."""
    users = [n for n in graph.node if name in n.input]
    if len(users) == 1 and users[0].op_type == "QuantizeLinear":
        after = [n for n in graph.node if users[0].output[0] in n.input]
        if len(after) == 1 and after[0].op_type == "DequantizeLinear":
            return after[0].output[0]
    return name


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
