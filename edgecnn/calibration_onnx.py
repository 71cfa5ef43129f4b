"""Calibrating an existing ONNX classifier (`edgecnn calibrate`): a temperature inserted into its graph.

    calibrate_onnx("model.onnx", "data/shapes", "model.calibrated.onnx")   # fit T on val/, write the new file
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import DEFAULT_OOD_SCORE, DEFAULT_RECALL, CalibrationResult, fit_temperature, summarize
from .runtime.decode import softmax


@dataclass(frozen=True)
class OnnxCalibration:
    path: Path
    source: str  # "logits" (the graph's logits output) or "log-probabilities" (a model with only a softmax)
    previous_temperature: float  # already applied to the input model (1.0 when it had none)
    result: CalibrationResult

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "source": self.source, "previous_temperature": self.previous_temperature,
                **self.result.to_dict()}


def _graph_outputs(session: Any, clf: Any, images: np.ndarray, name: str, *, batch_size: int = 64) -> np.ndarray:
    """Output ``name`` of ``session`` (a graph with ``clf``'s input) for uint8 NHWC ``images``, in chunks it accepts."""
    from .runtime.preprocess import batches

    out = []
    for chunk, n in batches(images, clf.fixed_batch or batch_size, pad=bool(clf.fixed_batch)):
        scores = session.run([name], {clf.input_name: clf.model_input(chunk)})[0]
        out.append(np.asarray(scores, dtype=np.float64).reshape(len(chunk), -1)[:n])
    return np.concatenate(out)


def _insert_temperature(model: Any, logits: str | None, probs: str | None, temperature: float) -> None:
    """Make the graph's logits (and so its softmax) come out divided by ``temperature``, whatever its precision.

    With a logits tensor: a Div right after the node producing it, under the same name, so every
    consumer (the Softmax, the graph output) sees the scaled logits. With only probabilities: a Div in
    front of the Softmax that makes them; or, if none does, Softmax(Log(p) / T) appended.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    kinds = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    elem = kinds.get(logits or probs or "", TensorProto.FLOAT)
    np_type = {TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}.get(elem, np.float32)
    t_name = "post.temperature"
    while any(t.name == t_name for t in graph.initializer):
        t_name += "_"
    graph.initializer.append(numpy_helper.from_array(np.asarray(temperature, dtype=np_type), t_name))

    def producer(name: str) -> tuple[int, Any]:
        for i, node in enumerate(graph.node):
            if name in node.output:
                return i, node
        raise ValueError(f"no node produces {name!r}; cannot insert a temperature")

    if logits is not None:
        target, nodes_after = logits, []
    else:
        assert probs is not None
        i, node = producer(probs)
        if node.op_type == "Softmax":
            scaled = f"{node.input[0]}.calibrated"
            graph.node.insert(i, helper.make_node("Div", [node.input[0], t_name], [scaled], name="post.calibrate"))
            node.input[0] = scaled
            return
        target = probs
        nodes_after = ["log", "softmax"]
    i, node = producer(target)
    raw = f"{target}.uncalibrated"
    node.output[:] = [raw if o == target else o for o in node.output]
    new = []
    if nodes_after:
        new.append(helper.make_node("Log", [raw], [f"{target}.log"], name="post.log"))
        new.append(helper.make_node("Div", [f"{target}.log", t_name], [f"{target}.scaled"], name="post.calibrate"))
        new.append(helper.make_node("Softmax", [f"{target}.scaled"], [target], name="post.softmax_calibrated", axis=-1))
    else:
        new.append(helper.make_node("Div", [raw, t_name], [target], name="post.calibrate"))
    for k, n in enumerate(new):
        graph.node.insert(i + 1 + k, n)


def calibrate_onnx(model_path: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike, *,
                   recall: float = DEFAULT_RECALL, score: str | None = None, labels: Any = None,
                   size: int | None = None, mean: Any = None, std: Any = None) -> OnnxCalibration:
    """Fit T on ``data_dir`` (class folders; its val/ when present) for an existing ONNX classifier, write ``out``.

    The new file's logits are divided by T (probabilities follow), its metadata is kept, with
    ``edgecnn.temperature`` (the total temperature applied) and ``edgecnn.ood`` (the unknown-input rule,
    picked on the same images for ``recall``) added. Written atomically, after a check that the new
    graph's probabilities are softmax(logits / T) and its top-1 answers unchanged.
    """
    import onnx

    from .data import DatasetError, EvalSet, class_samples
    from .export import graph as G
    from .fileio import atomic_path
    from .runtime import Classifier
    from .runtime.decode import looks_like_probabilities
    from .runtime.spec import META_OOD, META_TEMPERATURE, PROBABILITIES_OUTPUT

    clf = Classifier(model_path, device="cpu", labels=labels, size=size, mean=mean, std=std)
    root, samples = class_samples(data_dir, clf.labels)
    dataset = EvalSet(samples, clf.spec)
    if len(dataset) < 2:
        raise DatasetError(f"{root}: {len(dataset)} readable image(s); a temperature needs a validation set")
    images, targets = np.stack(list(dataset.images)), np.asarray(dataset.targets, dtype=np.int64)
    names = [o.name for o in clf.session.get_outputs()]
    logits_name = "logits" if "logits" in names else None
    probs_name = PROBABILITIES_OUTPUT if PROBABILITIES_OUTPUT in names else None
    if logits_name is None and probs_name is None:
        first = _graph_outputs(clf.session, clf, images[:8], names[0])
        if looks_like_probabilities(first):
            probs_name = names[0]
        else:
            logits_name = names[0]
    if logits_name is not None:
        logits, source = _graph_outputs(clf.session, clf, images, logits_name), "logits"
    else:
        assert probs_name is not None
        probs = _graph_outputs(clf.session, clf, images, probs_name)
        logits, source = np.log(np.clip(probs, 1e-12, None)), "log-probabilities"
    # For log-probabilities energy degenerates (logsumexp of log p is 0 at T = 1); max_prob works on either.
    score = score or (DEFAULT_OOD_SCORE if source == "logits" or DEFAULT_OOD_SCORE != "energy" else "max_prob")
    temperature = fit_temperature(logits, targets)
    result = summarize(logits, targets, temperature, recall=recall, score=score)

    proto = onnx.load(str(clf.path))
    meta = G.read_metadata(proto)
    previous = float(meta.get(META_TEMPERATURE, 1.0))
    _insert_temperature(proto, logits_name, probs_name, temperature)
    G.set_metadata(proto, {META_TEMPERATURE: repr(previous * temperature), META_OOD: json.dumps(result.ood, sort_keys=True)})
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = _graph_outputs(session, clf, images, logits_name or probs_name or "")
    expected = logits / temperature if logits_name else softmax(logits / temperature)
    if not np.allclose(got, expected, atol=1e-3, rtol=1e-3) or (got.argmax(1) != logits.argmax(1)).any():
        raise ValueError(f"the calibrated graph does not compute what was fitted (max difference "
                         f"{np.abs(got - expected).max():.2e}); nothing written to {out}")
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return OnnxCalibration(Path(out), source, previous, result)
