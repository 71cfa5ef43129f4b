"""ONNX graph pieces: in-graph uint8 preprocessing, the softmax output, clean-up checks and metadata.

    model = add_uint8_preprocessing(model, spec)     # uint8 NHWC pixels in, normalization inside
    model = add_softmax(model)                       # a `probabilities` output beside `logits`
    set_metadata(model, {META_ARCH: "resnet8"}); read_metadata(model)

Everything here edits an ``onnx.ModelProto`` in place with ``onnx.helper``/``numpy_helper``; nothing
computes a shape at run time, so the graph that onnxruntime sees has no Shape/Range/Unsqueeze chains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runtime.spec import PROBABILITIES_OUTPUT, PreprocessSpec

if TYPE_CHECKING:
    import onnx

INPUT_PIXELS = "pixels"  # uint8 (N, H, W, 3) RGB
INPUT_FLOAT = "input"  # float32 (N, 3, H, W), normalized
OUTPUT_LOGITS = "logits"
OUTPUT_PROBS = PROBABILITIES_OUTPUT  # the softmax output the runtime reads (defined once, in runtime/spec.py)

# Operators that betray run-time shape arithmetic; a clean export has none of them.
SHAPE_OPS = ("Shape", "Range", "Unsqueeze", "Squeeze", "ConstantOfShape", "Gather", "Expand", "Size")


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if name in n.input]


def _initializer(graph: onnx.GraphProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in graph.initializer if t.name == name), None)


def _fold_scale_into_conv(graph: onnx.GraphProto, tensor: str, scale: np.ndarray) -> bool:
    """Multiply the input-channel slices of the one Conv that reads ``tensor`` by ``scale``.

    conv(x * s) == conv'(x) with W'[:, c] = W[:, c] * s[c] exactly, zero padding included, because the
    mean has already been subtracted: a padded zero means the same before and after the scaling.
    Returns False (nothing changed) when ``tensor`` does not feed exactly one plain Conv.
    """
    from onnx import helper, numpy_helper

    users = _consumers(graph, tensor)
    if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != tensor:
        return False
    conv = users[0]
    group = next((helper.get_attribute_value(a) for a in conv.attribute if a.name == "group"), 1)
    weight = _initializer(graph, conv.input[1])
    if group != 1 or weight is None or len(_consumers(graph, weight.name)) != 1:
        return False
    w = numpy_helper.to_array(weight).astype(np.float32)
    if w.ndim != 4 or w.shape[1] != scale.size:
        return False
    weight.CopyFrom(numpy_helper.from_array((w * scale.reshape(1, -1, 1, 1)).astype(np.float32), weight.name))
    return True


def add_uint8_preprocessing(model: onnx.ModelProto, spec: PreprocessSpec, *, batch: int | str = "batch",
                            fold_scale: bool = True) -> onnx.ModelProto:
    """Replace the float NCHW input by uint8 NHWC pixels: Cast, Sub(255*mean), Transpose, scale.

    The scale 1/(255*std) is folded into the first convolution's weights when it can be, leaving
    Cast -> Sub -> Transpose -> Conv; the subtraction stays in front of the zero-padded convolution.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    assert len(graph.input) == 1, "the float model has one input"
    old = graph.input[0].name
    mean = np.asarray(spec.mean255, dtype=np.float32)
    inv_std = np.asarray(spec.inv_std255, dtype=np.float32)

    centred = "pre.centred_nchw"
    for node in graph.node:  # the model now reads the centred tensor instead of its old input
        node.input[:] = [centred if i == old else i for i in node.input]
    folded = fold_scale and _fold_scale_into_conv(graph, centred, inv_std)
    transpose_out = centred
    nodes = []
    if not folded:
        transpose_out = "pre.centred_nchw_unscaled"
        graph.initializer.append(numpy_helper.from_array(inv_std.reshape(1, 3, 1, 1), "pre.inv_std"))
        nodes.append(helper.make_node("Mul", [transpose_out, "pre.inv_std"], [centred], name="pre.scale"))
    # The mean is tiled to (W, 3): onnxruntime broadcasts a (3,) operand three floats at a time (95 us of a
    # 0.45 ms resnet8 at 64 px), a (W, 3) one in rows of 3*W that vectorize (a few us).
    tiled = np.ascontiguousarray(np.broadcast_to(mean, (spec.size, 3)))
    graph.initializer.append(numpy_helper.from_array(tiled, "pre.mean"))
    nodes = [
        helper.make_node("Cast", [INPUT_PIXELS], ["pre.float"], name="pre.cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["pre.float", "pre.mean"], ["pre.centred_nhwc"], name="pre.sub_mean"),
        helper.make_node("Transpose", ["pre.centred_nhwc"], [transpose_out], name="pre.to_nchw", perm=[0, 3, 1, 2]),
        *nodes,
    ]
    for node in reversed(nodes):
        graph.node.insert(0, node)
    new_input = helper.make_tensor_value_info(INPUT_PIXELS, TensorProto.UINT8, [batch, spec.size, spec.size, 3])
    graph.input.pop()
    graph.input.append(new_input)
    return model


def add_softmax(model: onnx.ModelProto, *, logits: str = OUTPUT_LOGITS) -> onnx.ModelProto:
    """Append ``probabilities = Softmax(logits, axis=1)`` as a second graph output."""
    from onnx import helper

    graph = model.graph
    out = next(o for o in graph.output if o.name == logits)
    graph.node.append(helper.make_node("Softmax", [logits], [OUTPUT_PROBS], name="post.softmax", axis=1))
    probs = graph.output.add()
    probs.CopyFrom(out)
    probs.name = OUTPUT_PROBS
    return model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite the exporter's head into the operators onnxruntime quantizes and fuses best.

    ReduceMean/ReduceMax over H and W (keepdims) become GlobalAveragePool and a MaxPool over the whole
    map (onnxruntime has int8 kernels for those: QLinearGlobalAveragePool, uint8 NhwcMaxPool), and a
    Reshape to (-1, C) of a (N, C, 1, 1) tensor becomes Flatten, which needs no shape constant. Node
    annotations (stack traces with local paths) are dropped; unused initializers removed.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}  # None: a dimension not known statically
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def const(name: str) -> list[int] | None:
        tensor = _initializer(graph, name)
        return None if tensor is None else numpy_helper.to_array(tensor).reshape(-1).tolist()

    def attr(node: onnx.NodeProto, name: str, default: int) -> int:
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    def static(dims: list[int | None]) -> list[int] | None:
        known = [d for d in dims if d is not None]
        return known if len(known) == len(dims) else None

    pools = {"ReduceMean": "GlobalAveragePool", "ReduceMax": "MaxPool"}
    for i, node in enumerate(graph.node):
        del node.metadata_props[:]
        node.doc_string = ""
        shape = shapes.get(node.input[0]) if node.input else None
        if node.op_type in pools and shape is not None and len(shape) == 4 and len(node.input) == 2:
            axes = const(node.input[1])
            if axes is not None and sorted(a % 4 for a in axes) == [2, 3] and attr(node, "keepdims", 1) == 1:
                # MaxPool with a kernel of the whole (static) map: onnxruntime runs it on uint8 in NHWC,
                # whereas GlobalMaxPool has no int8 kernel and would cost a dequantize/transpose round trip.
                kernel = static(shape[2:])
                kw: dict[str, Any] = (
                    {"kernel_shape": kernel} if node.op_type == "ReduceMax" and kernel is not None else {})
                op = pools[node.op_type] if node.op_type == "ReduceMean" or kw else "GlobalMaxPool"
                graph.node[i].CopyFrom(helper.make_node(op, [node.input[0]], list(node.output), name=node.name, **kw))
        elif node.op_type == "Reshape" and shape is not None and len(shape) >= 2 and (features := static(shape[1:])) is not None:
            target = const(node.input[1])
            if target is not None and len(target) == 2 and target[0] in (-1, 0) and target[1] == int(np.prod(features)):
                graph.node[i].CopyFrom(helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name, axis=1))
    for value in [*graph.input, *graph.output]:
        del value.metadata_props[:]
    del model.metadata_props[:]
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]  # stale after the rewrites; shape inference rebuilds it
    return model


def set_batch_dim(model: onnx.ModelProto, batch: int | str) -> None:
    """Name (dynamic) or fix the first dimension of every graph input and output."""
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if isinstance(batch, str):
            dim.dim_param = batch
        else:
            dim.dim_value = batch


def shape_ops(model: onnx.ModelProto) -> list[str]:
    """Names of nodes that compute shapes at run time (should be empty)."""
    return [f"{n.op_type}:{n.name}" for n in model.graph.node if n.op_type in SHAPE_OPS]


def set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    """Write ``values`` into ``metadata_props``, replacing keys that are already there."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in [*keep, *values.items()]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
