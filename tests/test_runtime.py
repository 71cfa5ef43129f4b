"""The standalone runtime: model loading (edgecnn and foreign models), preprocessing, decoding, streaming."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_preprocess import bad_files

from edgecnn.runtime import (
    Classifier,
    ModelError,
    PreprocessSpec,
    StageTimes,
    check_external_data,
    expand_paths,
    preprocess,
)
from edgecnn.runtime.policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN
from edgecnn.runtime.spec import META_INPUT, META_PRECISION, META_SPEC

LABELS = ("red", "green", "blue")
WEIGHT = 4.0  # class c's logit = WEIGHT * mean of normalized channel c


# ---------------------------------------------------------------------------------------- model builders
def make_model(path: Path, *, layout: str = "NHWC", dtype: str = "uint8", size: int | str = 16, batch: int | str = "N",
               outputs: str = "both", spec: PreprocessSpec | None = None, classes: int = 3) -> Path:
    """A tiny ONNX classifier built with onnx.helper: logit c = WEIGHT * mean(normalized channel c).

    uint8 inputs normalize inside the graph (as edgecnn's exporter does); float inputs expect normalized
    values. ``spec`` adds edgecnn metadata; without it the model is "foreign". ``outputs``: "logits",
    "probabilities" (a softmax output named "prob") or "both" (edgecnn's "logits" + "probabilities").
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mean = np.array((spec or PreprocessSpec(size=16)).mean, np.float32) * 255
    std = np.array((spec or PreprocessSpec(size=16)).std, np.float32) * 255
    elem = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}[dtype]
    shape = [batch, size, size, 3] if layout == "NHWC" else [batch, 3, size, size]
    nodes, inits = [], []
    x = "pixels"
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT))
        inits += [numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(1 / std, "inv_std")]
        nodes += [helper.make_node("Sub", ["xf", "mean"], ["xc"]), helper.make_node("Mul", ["xc", "inv_std"], ["xn"])]
        x = "xn"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    w = np.zeros((3, classes), np.float32)
    w[np.arange(3), np.arange(3) % classes] = WEIGHT
    inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(classes, np.float32), "B")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "W", "B"], ["logits"])]
    outs = []
    if outputs in ("logits", "both"):
        outs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes]))
    if outputs in ("probabilities", "both"):
        name = "probabilities" if outputs == "both" else "prob"
        nodes.append(helper.make_node("Softmax", ["logits"], [name], axis=1))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, classes]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("pixels", elem, shape)], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if spec is not None:
        meta = {META_SPEC: spec.to_json(), META_INPUT: "uint8-nhwc" if dtype == "uint8" else "float-nchw", META_PRECISION: "fp32"}
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def reference_probs(pixels: np.ndarray, spec: PreprocessSpec, classes: int = 3) -> np.ndarray:
    """What make_model computes, in numpy: the ground truth for the runtime's answers."""
    x = (pixels.astype(np.float32) - np.array(spec.mean) * 255) / (np.array(spec.std) * 255)
    w = np.zeros((3, classes), np.float32)
    w[np.arange(3), np.arange(3) % classes] = WEIGHT
    logits = x.mean(axis=(1, 2)) @ w
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


SPEC = PreprocessSpec(size=16, labels=LABELS, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("m") / "tiny.onnx", spec=SPEC)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("img")
    out = {}
    for name, rgb in COLOURS.items():
        out[name] = root / f"{name}.jpg"
        Image.new("RGB", (64, 48), rgb).save(out[name], quality=95)
    return out


# ------------------------------------------------------------------------------------------------ models
def test_edgecnn_model_metadata_and_answers(model, images) -> None:
    clf = Classifier(model, device="cpu", threads=1)
    assert clf.spec == SPEC and clf.labels == LABELS
    assert (clf.input_layout, clf.input_dtype, clf.device, clf.precision) == ("NHWC", "uint8", "cpu", "fp32")
    assert clf.output_name == "probabilities" and clf.outputs_probabilities
    for name, path in images.items():
        pred = clf.classify(path, top_k=3)
        assert pred.label == name and [c.label for c in pred.top][0] == name and len(pred.top) == 3
        assert pred.margin == pytest.approx(pred.top[0].prob - pred.top[1].prob, abs=1e-6)
    pixels = np.stack([preprocess(p, SPEC) for p in images.values()])
    np.testing.assert_allclose(clf.predict_pixels(pixels), reference_probs(pixels, SPEC), atol=1e-5)


def test_classify_accepts_paths_pil_arrays_and_bgr(model, images) -> None:
    clf = Classifier(model, device="cpu")
    rgb = np.asarray(Image.open(images["red"]).convert("RGB"))
    answers = clf.classify([images["red"], Image.open(images["red"]), rgb, str(images["red"])])
    assert [a.label for a in answers] == ["red"] * 4
    assert clf.classify(rgb[:, :, ::-1], bgr=True).label == "red"
    assert clf.classify(rgb[:, :, ::-1]).label == "blue"  # BGR read as RGB swaps red and blue: the flag matters
    assert isinstance(clf.classify(np.stack([rgb, rgb])), list)


def test_uncertainty_flags(model) -> None:
    clf = Classifier(model, device="cpu")
    grey = np.full((16, 16, 3), 128, np.uint8)  # equal channels: three-way tie
    pred = clf.classify(grey, min_confidence=0.5)
    assert pred.uncertain and pred.margin < 0.01
    sure = clf.classify(np.full((16, 16, 3), (250, 5, 5), np.uint8), min_confidence=0.5, min_margin=0.3)
    assert not sure.uncertain and sure.label == "red"
    mild = np.full((16, 16, 3), (160, 130, 110), np.uint8)
    m = clf.classify(mild).margin
    assert 0.1 < m < 0.9
    assert clf.classify(mild, min_margin=m + 0.01, min_confidence=0).uncertain
    assert not clf.classify(mild, min_margin=m - 0.01, min_confidence=0).uncertain
    p = clf.classify(mild).prob
    assert clf.classify(mild, min_confidence=p + 0.01, min_margin=0).uncertain
    assert not clf.classify(mild, min_confidence=p - 0.01, min_margin=0).uncertain


def test_library_defaults_are_the_policy(model, tmp_path) -> None:
    """Without thresholds the library flags what `classify` and the report flag: one definition of uncertain."""
    clf = Classifier(model, device="cpu")
    grey = np.full((16, 16, 3), 128, np.uint8)  # a three-way tie: probability about 1/3, margin near 0
    assert clf.classify(grey).uncertain
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert [r.prediction.uncertain for r in clf.classify_paths([tmp_path / "grey.png"])] == [True]
    sure = np.full((16, 16, 3), (250, 5, 5), np.uint8)
    pred = clf.classify(sure)
    assert pred.uncertain == (pred.prob < DEFAULT_MIN_CONFIDENCE or pred.margin < DEFAULT_MIN_MARGIN)


@pytest.mark.parametrize("layout,outputs", [("NCHW", "logits"), ("NHWC", "probabilities"), ("NCHW", "both")])
def test_foreign_float_models_with_flags(tmp_path, images, layout, outputs) -> None:
    path = make_model(tmp_path / "foreign.onnx", layout=layout, dtype="float32", size=16, outputs=outputs)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n\n")
    clf = Classifier(path, device="cpu", labels=labels, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert (clf.input_layout, clf.input_dtype, clf.spec.size, clf.labels) == (layout, "float32", 16, LABELS)
    pixels = np.stack([preprocess(p, SPEC) for p in images.values()])
    probs = clf.predict_pixels(pixels)  # softmax applied to logits, left alone on probabilities
    np.testing.assert_allclose(probs, reference_probs(pixels, SPEC), atol=1e-5)
    assert [clf.classify(p).label for p in images.values()] == list(LABELS)


def test_foreign_model_dynamic_size_needs_size(tmp_path, images) -> None:
    path = make_model(tmp_path / "dyn.onnx", layout="NCHW", dtype="float32", size="S", outputs="logits")
    with pytest.raises(ModelError, match="--size"):
        Classifier(path, device="cpu")
    clf = Classifier(path, device="cpu", size=24, labels=LABELS)
    assert clf.spec.size == 24 and clf.classify(images["green"]).label == "green"
    assert Classifier(path, device="cpu", size=24).labels == ("0", "1", "2")  # no labels: class numbers


def test_fixed_batch_model_runs_any_number_of_images(tmp_path) -> None:
    path = make_model(tmp_path / "b1.onnx", batch=1, spec=SPEC)
    clf = Classifier(path, device="cpu")
    pixels = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(clf.predict_pixels(pixels), reference_probs(pixels, SPEC), atol=1e-5)


def test_label_count_mismatch_is_an_error(tmp_path, model) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(ModelError, match="2 labels given but the model has 3 outputs"):
        Classifier(model, device="cpu", labels=labels)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        Classifier(model, device="cpu", labels=tmp_path / "empty.txt")


def test_bad_model_files(tmp_path, images) -> None:
    not_onnx = tmp_path / "photo.onnx"
    not_onnx.write_bytes(images["red"].read_bytes())
    with pytest.raises(ModelError, match="photo.onnx: not a loadable ONNX model"):
        Classifier(not_onnx)
    with pytest.raises(ModelError, match="no such model file"):
        Classifier(tmp_path / "missing.onnx")
    text = tmp_path / "text.onnx"
    text.write_text("location is not a model")  # contains the pre-filter's key: the wire parser must cope
    with pytest.raises(ModelError, match="text.onnx"):
        Classifier(text)


def test_cuda_missing_is_a_clear_error(model) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert Classifier(model, device="cuda").device == "cuda"
        return
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        Classifier(model, device="cuda")
    assert Classifier(model, device="auto").device == "cpu"


def _external_model(folder: Path, location: str) -> Path:
    """A MatMul model whose weight lives in external data at ``location`` (written raw: onnx refuses '..')."""
    from onnx import TensorProto, helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 3], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "36")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [weight])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ext.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "ABSOLUTE", "link.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.eye(3, dtype=np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    if location == "ABSOLUTE":
        location = str(secret)
    if location == "link.bin":
        (folder / "link.bin").symlink_to(secret)
    path = _external_model(folder, location)
    # Our own check (older onnxruntime versions on boards do not check) and the Classifier both refuse it.
    with pytest.raises(ModelError, match="outside the model's folder"):
        check_external_data(path)
    with pytest.raises(ModelError, match="outside the model's folder"):
        Classifier(path)


def test_external_data_inside_the_folder_passes_the_check(tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(np.eye(3, dtype=np.float32).tobytes())
    check_external_data(_external_model(folder, "weights.bin"))  # no error
    with pytest.raises(ModelError, match="image classifier"):  # loads, but is not an image classifier
        Classifier(folder / "ext.onnx")


# --------------------------------------------------------------------------------------------- streaming
def test_classify_paths_keeps_order_and_reports_errors(tmp_path, model, images) -> None:
    bad = bad_files(tmp_path / "bad")
    order = [images["red"], bad["empty"][0], images["blue"], bad["bomb"][0], images["green"], bad["truncated"][0]] * 3
    clf = Classifier(model, device="cpu", threads=1)
    times = StageTimes()
    results = list(clf.classify_paths(order, batch_size=4, workers=2, top_k=2, timings=times))
    assert [r.path for r in results] == [str(p) for p in order]
    assert [r.prediction.label for r in results if r.ok] == ["red", "blue", "green"] * 3
    assert all(len(r.prediction.top) == 2 for r in results if r.ok)
    assert sum(not r.ok for r in results) == 9 and all(r.error for r in results if not r.ok)
    assert (times.images, times.failed) == (9, 9) and times.batches == 5
    assert times.decode_s > 0 and times.infer_s > 0 and times.wall_s > 0


def test_classify_paths_stops_early_without_hanging(model, images) -> None:
    clf = Classifier(model, device="cpu")
    stream = clf.classify_paths(iter([images["red"]] * 1000), batch_size=8)
    first = next(stream)
    stream.close()  # the caller breaks off: queued decoding is cancelled
    assert first.prediction.label == "red"


def test_expand_paths(tmp_path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/2.png", "a/1.jpg", "a/sub/3.jpg", "a/readme.txt", "a/.hidden.jpg", "top.JPG"):
        (tmp_path / name).write_bytes(b"x")
    found = list(expand_paths([tmp_path / "a"]))
    assert [Path(p).name for p in found] == ["1.jpg", "2.png"]
    assert [Path(p).name for p in expand_paths([tmp_path / "a"], recursive=True)] == ["1.jpg", "2.png", "3.jpg"]
    assert [Path(p).name for p in expand_paths([str(tmp_path / "a" / "*.jpg")])] == ["1.jpg"]
    assert [Path(p).name for p in expand_paths([str(tmp_path / "**" / "*.jpg")], recursive=True)] == ["1.jpg", "3.jpg"]
    (tmp_path / "b" / "sub").mkdir(parents=True)
    (tmp_path / "b" / "sub" / "4.jpg").write_bytes(b"x")
    missing = list(expand_paths([str(tmp_path / "nothing*.jpg"), tmp_path / "a" / "readme.txt", tmp_path / "b"]))
    assert missing[0].error.endswith("no file matches this pattern")
    assert Path(missing[1]).name == "readme.txt"  # named explicitly: classified (and reported if not an image)
    assert missing[2].error.endswith("no image files in this folder (add -r to look in subfolders)")
    assert [Path(p).name for p in expand_paths([tmp_path / "b"], recursive=True)] == ["4.jpg"]


_MEMORY_SCRIPT = r"""
import json, sys
from edgecnn.runtime import Classifier, expand_paths
folder, model, mode = sys.argv[1:4]
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
clf = Classifier(model, device="cpu", threads=1)
kept, samples = [], []
for i, r in enumerate(clf.classify_paths(expand_paths([folder]), batch_size=32, workers=2)):
    assert r.ok, r.error
    if mode == "leak":  # what an unbounded pipeline would do: keep every decoded image
        kept.append(clf.preprocess(r.path))
    if i in (300, 2999):
        samples.append(rss_mb())
print(json.dumps({"n": i + 1, "rss": samples}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read the resident set size")
def test_streaming_memory_is_flat_on_a_large_folder(tmp_path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    small = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(small, format="PNG")
    for i in range(3000):
        (folder / f"{i:05d}.png").write_bytes(small.getvalue())
    spec = PreprocessSpec(size=64, labels=LABELS)  # 12 KB per decoded image: 3000 kept would be 35 MB
    model = make_model(tmp_path / "m64.onnx", size=64, spec=spec)
    growth = {}
    for mode in ("stream", "leak"):
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(folder), str(model), mode],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["n"] == 3000
        growth[mode] = data["rss"][1] - data["rss"][0]
    print("rss growth MB", growth)
    assert growth["stream"] < 8, growth  # flat: the pipeline holds ~2 batches, whatever the folder size
    assert growth["leak"] > 25, growth  # the measurement can see a leak of this size


# ------------------------------------------------------------------------- a real model from edgecnn export
@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The session's trained tinycnn exported both ways: uint8 NHWC (the default) and float NCHW."""
    export = pytest.importorskip("edgecnn.export")
    root = tmp_path_factory.mktemp("exported")
    return {kind: export.export_onnx(checkpoint, root / f"{kind}.onnx", input=kind).path for kind in ("uint8-nhwc", "float-nchw")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uint8-nhwc", "float-nchw"])
def test_exported_model_matches_torch_through_the_runtime(exported, checkpoint, shapes_dir, kind) -> None:
    import torch

    from edgecnn.checkpoint import load_checkpoint
    from edgecnn.data import EvalSet, scan_class_folders
    from edgecnn.train import pixels_to_tensor

    ckpt = load_checkpoint(checkpoint)
    clf = Classifier(exported[kind], device="cpu", threads=1)
    assert clf.spec == ckpt.spec  # labels, size and preprocessing all came from the model's metadata
    assert (clf.input_layout, clf.input_dtype) == (("NHWC", "uint8") if kind == "uint8-nhwc" else ("NCHW", "float32"))
    files = scan_class_folders(shapes_dir / "val")
    samples = [(path, i) for i, name in enumerate(sorted(files)) for path in files[name]]
    evalset = EvalSet(samples, ckpt.spec, threads=1)  # the training code's validation pipeline
    runtime_pixels = np.stack([clf.preprocess(path) for path, _ in samples])
    np.testing.assert_array_equal(runtime_pixels, np.stack(evalset.images))  # same pixels, bit for bit
    with torch.no_grad():
        expected = torch.softmax(ckpt.build_model()(pixels_to_tensor(torch.from_numpy(runtime_pixels), ckpt.spec,
                                                                      torch.device("cpu"))), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_pixels(runtime_pixels), expected, atol=1e-4)
    streamed = list(clf.classify_paths([path for path, _ in samples], batch_size=8, top_k=3))
    assert [r.prediction.index for r in streamed] == expected.argmax(1).tolist()
    assert [r.prediction.label for r in streamed] == [ckpt.spec.labels[i] for i in expected.argmax(1)]


# ------------------------------------------------------------------------------- in-memory models, batching
def test_in_memory_model_answers_as_the_file_does(model, images) -> None:
    import onnx

    from_file = Classifier(model, device="cpu", threads=1)
    pixels = np.stack([from_file.preprocess(p) for p in images.values()])
    for source in (model.read_bytes(), onnx.load(str(model))):  # bytes, or an onnx.ModelProto
        clf = Classifier(source, device="cpu", threads=1)
        assert clf.path is None and clf.name == "<in-memory>" and clf.describe()["model"] == "<in-memory>"
        assert clf.spec == from_file.spec and clf.precision == "fp32"
        np.testing.assert_array_equal(clf.predict_pixels(pixels), from_file.predict_pixels(pixels))
        assert [p.label for p in clf.classify(list(images.values()))] == list(images)
    assert from_file.path == model and from_file.describe()["model"] == str(model)
    with pytest.raises(ModelError, match="^<in-memory>: not a loadable ONNX model"):
        Classifier(b"location: not a model", device="cpu")


@pytest.mark.parametrize("batch", [1, 4, "N"])
def test_predict_pixels_in_chunks_pads_fixed_batches(tmp_path, batch) -> None:
    clf = Classifier(make_model(tmp_path / "m.onnx", batch=batch, spec=SPEC), device="cpu")
    pixels = np.random.default_rng(1).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    expected = reference_probs(pixels, SPEC)
    for batch_size in (None, 1, 3, 7, 50):
        got = clf.predict_pixels(pixels, batch_size=batch_size)
        assert got.shape == (7, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert clf.predict_pixels(pixels[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        clf.predict_pixels(pixels, batch_size=0)


def test_batches_repeat_the_last_image_to_fill_a_fixed_batch() -> None:
    from edgecnn.runtime import batches

    pixels = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    chunks = list(batches(pixels, 2, pad=True))
    assert [n for _, n in chunks] == [2, 2, 1] and all(len(c) == 2 for c, _ in chunks)
    np.testing.assert_array_equal(chunks[-1][0], pixels[[4, 4]])  # padding copies, not black images
    assert [len(c) for c, _ in batches(pixels, 2)] == [2, 2, 1]  # unpadded
    assert list(batches(pixels[:0], 4, pad=True)) == []


def test_normalization_constants_are_derived_once_from_the_spec() -> None:
    from edgecnn.runtime import normalize

    spec = PreprocessSpec(size=8, mean=(0.2, 0.4, 0.6), std=(0.1, 0.25, 0.5))
    assert spec.mean255 == pytest.approx((51.0, 102.0, 153.0)) and spec.inv_std255 == pytest.approx((1 / 25.5, 1 / 63.75, 1 / 127.5))
    pixels = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    expected = ((pixels / 255.0 - np.array(spec.mean)) / np.array(spec.std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(normalize(pixels, spec), expected, rtol=1e-5, atol=1e-5)


def test_onnx_wire_codec_round_trips() -> None:
    from edgecnn.runtime import onnx_wire as W

    for value in (0, 1, 127, 128, 300, 2**35 + 7):
        data = W.encode_varint(value)
        assert W.decode_varint(data, 0) == (value, len(data))
    message = W.encode_field(1, 8) + W.encode_field(2, "peak") + W.encode_field(7, W.encode_field(1, 300))
    fields = [(n, w, v if isinstance(v, int) else bytes(v)) for n, w, v in W.iter_fields(message)]
    assert fields == [(1, W.VARINT, 8), (2, W.LENGTH_DELIMITED, b"peak"), (7, W.LENGTH_DELIMITED, W.encode_field(1, 300))]
    with pytest.raises(W.WireError, match="truncated"):
        list(W.iter_fields(message[:-1]))


@pytest.mark.slow
def test_export_verifies_through_the_runtime_classifier(checkpoint, tmp_path, monkeypatch) -> None:
    """Export checks the in-memory model with the Classifier the board runs: a wrong answer there fails the export."""
    export = pytest.importorskip("edgecnn.export")
    real = Classifier.predict_pixels
    seen = []

    def shifted(self, pixels, **kw):  # the runtime answers the next class
        seen.append(self.name)
        return np.roll(real(self, pixels, **kw), 1, axis=1)

    monkeypatch.setattr(Classifier, "predict_pixels", shifted)
    out = tmp_path / "m.onnx"
    with pytest.raises(export.ExportError, match="verification failed, nothing written"):
        export.export_onnx(checkpoint, out)
    assert seen == ["<in-memory>"] and not out.exists()


def test_sessions_do_not_spin_unless_asked() -> None:
    """Idle onnxruntime threads would busy-wait on the cores the decoding threads need; only bench asks for it."""
    from edgecnn.runtime.session import session_options

    key = "session.intra_op.allow_spinning"
    assert session_options().get_session_config_entry(key) == "0"
    assert session_options(2).get_session_config_entry(key) == "0"
    assert session_options(2, spin=True).get_session_config_entry(key) == "1"
