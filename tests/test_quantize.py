"""Quantization: INT8 accuracy and agreement, metadata kept, uint8 input kept, the accuracy gate, errors, CLI."""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecnn.cli import cli
from edgecnn.runtime.spec import META_PRECISION

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

Q = import_module("edgecnn.export.quantize")  # the module (edgecnn.export.quantize is also the function)


def _tinted(root: Path, *, train: int = 60, val: int = 40, seed: int = 0) -> None:
    """3 classes of noise images told apart by a tint of random strength: learnable in seconds, not trivially."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c, name in enumerate(("red", "green", "blue")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 150, (32, 32, 3)) + rng.integers(0, 60, 3)
                img[..., c] += int(rng.integers(15, 90))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / name / f"{i}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """180 training and 120 validation images (one validation image is 0.83 points)."""
    root = tmp_path_factory.mktemp("tints")
    _tinted(root)
    return root


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """tinycnn trained for a few seconds on `data` (about 85% accurate), exported to ONNX.

    The shared tinycnn fixture is near chance on its harder shapes, which would make an accuracy
    comparison meaningless; this one has real margins for quantization to erode.
    """
    from edgecnn.export import export_onnx
    from edgecnn.train import TrainConfig, train

    run = tmp_path_factory.mktemp("qrun")
    train(data, run, TrainConfig(arch="tinycnn", img_size=32, epochs=3, batch_size=16, lr=5e-3, device="cpu"),
          progress=False)
    return export_onnx(run / "best.pt", run / "model.onnx").path


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_static_int8_accuracy_and_agreement(tmp_path: Path, fp32: Path, data: Path) -> None:
    from edgecnn.export import quantize

    out = tmp_path / "m.int8.onnx"
    r = quantize(fp32, data / "train", out, eval_dir=data / "val")
    assert r.written and r.passed and out.is_file() and r.precision == "int8"
    assert r.calib_images == 180 and r.eval_images == 120 and r.agreement_on == "eval"
    assert r.fp32_accuracy >= 0.7, "the test model should have learned something"
    assert r.accuracy_drop <= 0.01
    assert r.agreement >= 0.95
    assert r.size_ratio > 2 and r.quant_bytes == out.stat().st_size
    model = onnx.load(str(out))
    convs = sum(1 for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    conv_nodes = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(conv_nodes) == convs
    # every convolution's weights are int8 but the first's, kept FP32 on purpose (FIRST_CONV_FP32)
    assert [n.input[1] in dequantized for n in conv_nodes] == [False] + [True] * (convs - 1)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT] * 2
    before, after = _meta(fp32), _meta(out)
    assert after.pop(META_PRECISION) == "int8" and before.pop(META_PRECISION) == "fp32"
    assert after == before


def test_without_eval_reports_agreement_on_calibration(tmp_path: Path, fp32: Path, data: Path) -> None:
    from edgecnn.export import quantize

    r = quantize(fp32, data / "train", tmp_path / "q.onnx", calib_size=50, per_channel=False, method="percentile")
    assert r.calib_images == 50 and r.agreement_on == "calibration" and r.agreement_images == 50
    assert r.fp32_accuracy is None and r.agreement >= 0.9


@pytest.mark.parametrize("kw, precision", [({"mode": "dynamic"}, "int8-dynamic"), ({"fp16": True}, "fp16")])
def test_alternatives(tmp_path: Path, fp32: Path, data: Path, kw: dict, precision: str) -> None:
    from edgecnn.export import quantize

    out = tmp_path / "alt.onnx"
    r = quantize(fp32, None, out, eval_dir=data / "val", **kw)
    assert r.precision == precision and _meta(out)[META_PRECISION] == precision
    assert r.passed and r.agreement >= 0.95
    # The accuracies the gate compared are those of the two files, as `edgecnn eval` measures them.
    from edgecnn.evaluate import evaluate

    assert r.fp32_accuracy == pytest.approx(evaluate(fp32, data / "val").accuracy, abs=1e-9)
    assert r.quant_accuracy == pytest.approx(evaluate(out, data / "val").accuracy, abs=1e-9)
    assert r.accuracy_drop == pytest.approx(r.fp32_accuracy - r.quant_accuracy, abs=1e-9)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    probs = session.run(["probabilities"], {"pixels": np.zeros((2, 32, 32, 3), np.uint8)})[0]
    assert probs.dtype == np.float32 and probs.shape == (2, 3)


def _grey_calibration(root: Path) -> Path:
    """Four flat grey images: calibration ranges that miss the real images, so INT8 really loses accuracy."""
    from PIL import Image

    root.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (128, 128, 128)).save(root / f"{i}.png")
    return root


def test_accuracy_gate(tmp_path: Path, fp32: Path, data: Path) -> None:
    from edgecnn.export import QuantizeError, quantize

    calib, val = _grey_calibration(tmp_path / "grey"), data / "val"
    kept = tmp_path / "kept.onnx"
    r = quantize(fp32, calib, kept, eval_dir=val, max_drop=0.0, force=True)  # force: keeps it, passed False
    assert r.accuracy_drop is not None and r.accuracy_drop >= 2 / r.eval_images, "the bad calibration must cost accuracy"
    assert r.written and not r.passed and kept.is_file()
    step = 0.5 / r.eval_images  # half an image: max_drop just below and just above the measured drop

    out = tmp_path / "out" / "m.int8.onnx"
    out.parent.mkdir()
    out.write_bytes(b"old")
    with pytest.raises(QuantizeError, match="accuracy drops .* not written"):
        quantize(fp32, calib, out, eval_dir=val, max_drop=r.accuracy_drop - step)
    assert out.read_bytes() == b"old" and [p.name for p in out.parent.iterdir()] == ["m.int8.onnx"]
    ok = quantize(fp32, calib, out, eval_dir=val, max_drop=r.accuracy_drop + step)
    assert ok.passed and ok.written and ok.accuracy_drop == pytest.approx(r.accuracy_drop)
    assert out.read_bytes() == kept.read_bytes()

    runner = CliRunner()
    base = ["quantize", str(fp32), "--calib", str(calib), "--eval", str(val), "--max-drop", str(r.accuracy_drop - step)]
    result = runner.invoke(cli, [*base, "-o", str(tmp_path / "cli.onnx")])
    assert result.exit_code == 1 and not (tmp_path / "cli.onnx").exists()
    result = runner.invoke(cli, [*base, "-o", str(tmp_path / "cli.onnx"), "--force"])
    assert result.exit_code == 1 and "kept because of --force" in result.output
    assert (tmp_path / "cli.onnx").is_file()


def test_errors(tmp_path: Path, fp32: Path, data: Path) -> None:
    from edgecnn.export import QuantizeError, quantize

    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    with pytest.raises(QuantizeError, match="not an ONNX model"):
        quantize(text, data / "train", tmp_path / "o.onnx")
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(QuantizeError, match="no images found"):
        quantize(fp32, empty, tmp_path / "o.onnx")
    bare = onnx.load(str(fp32))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(QuantizeError, match="no edgecnn metadata"):
        quantize(tmp_path / "bare.onnx", data / "train", tmp_path / "o.onnx")
    with pytest.raises(QuantizeError, match="needs calibration images"):
        quantize(fp32, None, tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_cli(tmp_path: Path, fp32: Path, data: Path) -> None:
    out = tmp_path / "cli.int8.onnx"
    # entropy calibration: onnxruntime prints its progress, which must not reach --json's stdout
    result = CliRunner().invoke(cli, ["quantize", str(fp32), "--calib", str(data / "train"), "--calib-size", "32",
                                      "--method", "entropy", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["precision"] == "int8" and report["calib_images"] == 32 and report["agreement_images"] == 32
    assert out.is_file()
    text = tmp_path / "x.onnx"
    text.write_text("nope")
    bad = CliRunner().invoke(cli, ["quantize", str(text), "--calib", str(data / "train")])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "not an ONNX model" in bad.output
    usage = CliRunner().invoke(cli, ["quantize", str(fp32)])
    assert usage.exit_code == 2 and "--calib" in usage.output


def test_fixed_batch_float_input(tmp_path: Path, fp32: Path, data: Path) -> None:
    """A --batch 4 --input float-nchw export calibrates and evaluates in padded batches of 4."""
    from edgecnn.export import export_onnx, quantize

    fixed = export_onnx(fp32.parent / "best.pt", tmp_path / "b4.onnx", batch=4, input="float-nchw").path
    r = quantize(fixed, data / "train", tmp_path / "b4.int8.onnx", calib_size=10, eval_dir=data / "val", force=True)
    assert r.calib_images == 10 and r.eval_images == 120 and r.agreement >= 0.9
    session = ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, 3, 32, 32] and session.get_inputs()[0].type == "tensor(float)"


@pytest.mark.parametrize("flags, precision", [(["--mode", "dynamic"], "int8-dynamic"), (["--fp16"], "fp16")])
def test_no_images_at_all_writes_the_model_and_says_agreement_was_not_measured(
        tmp_path: Path, fp32: Path, flags: list[str], precision: str) -> None:
    """`edgecnn quantize model.onnx --mode dynamic` (its own --help example) and `--fp16` alone: no calib, no eval."""
    from edgecnn.export import quantize
    from edgecnn.runtime import Classifier

    model = tmp_path / "model.onnx"
    model.write_bytes(fp32.read_bytes())
    result = CliRunner().invoke(cli, ["quantize", str(model), *flags])
    assert result.exit_code == 0, result.output
    assert f"top-1 agreement FP32 vs {precision}: not measured, no images" in result.output
    (written,) = [p for p in tmp_path.iterdir() if p.name != "model.onnx"]
    assert written.name == f"model.{precision}.onnx" and _meta(written)[META_PRECISION] == precision
    assert Classifier(written, device="cpu").classify(np.zeros((32, 32, 3), np.uint8)).label in ("red", "green", "blue")

    as_json = CliRunner().invoke(cli, ["quantize", str(model), *flags, "-o", str(tmp_path / "j.onnx"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert (report["agreement"], report["agreement_on"], report["agreement_images"]) == (None, "none", 0)
    assert report["calib_images"] == 0 and report["fp32_accuracy"] is None and report["passed"] is True

    kw = {"mode": "dynamic"} if precision == "int8-dynamic" else {"fp16": True}
    r = quantize(model, None, tmp_path / "lib.onnx", **kw)
    assert r.written and r.agreement is None and r.agreement_on == "none" and r.precision == precision


def test_scoring_is_the_runtime_classifier(tmp_path: Path, fp32: Path, data: Path) -> None:
    """FP32/INT8 scores come from the Classifier that runs on the board, in memory or from a file."""
    from edgecnn.export import QuantizeError
    from edgecnn.runtime import Classifier

    proto, spec, kind = Q.load_fp32(fp32)
    pixels, _ = Q.load_pixels(Q.image_files(data / "val", limit=37), spec)
    board = Classifier(fp32, device="cpu").predict_pixels(pixels)
    np.testing.assert_allclose(Q.predict(fp32, pixels, spec, kind), board, rtol=0, atol=1e-6)  # batches of 32 vs 37
    np.testing.assert_allclose(Q.predict(proto.SerializeToString(), pixels, spec, kind), board, rtol=0, atol=1e-6)
    with pytest.raises(QuantizeError, match="takes NHWC input, but its metadata says float-nchw"):
        Q.predict(fp32, pixels, spec, "float-nchw")


def _conv_model(path: Path, channels: int, kernel: int) -> Path:
    """A uint8 NHWC graph whose cost is set by one convolution: to check that latency is measured, not assumed."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(channels, 3, kernel, kernel)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["pixels"], ["nchw8"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["nchw8"], ["nchw"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["nchw", "w"], ["features"], pads=[kernel // 2] * 4),
        helper.make_node("ReduceMean", ["features"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("Slice", ["pooled", "starts", "ends", "axes"], ["logits"]),
    ]
    consts = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("starts", 0), ("ends", 3), ("axes", 1))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 32, 32, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], [weight, *consts])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_latency_is_measured_side_by_side(tmp_path: Path, fp32: Path) -> None:
    """The on-the-spot measurement ranks a model with ~500x the work as the slower one, whatever the order."""
    _, spec, _ = Q.load_fp32(fp32)
    cheap, heavy = _conv_model(tmp_path / "cheap.onnx", 3, 1), _conv_model(tmp_path / "heavy.onnx", 256, 7)
    pixels = np.full((1, 32, 32, 3), 100, np.uint8)
    fast, slow = Q.measure_latency([cheap, heavy], spec, "uint8-nhwc", pixels, seconds=0.3)
    slow2, fast2 = Q.measure_latency([heavy, cheap], spec, "uint8-nhwc", pixels, seconds=0.3)
    assert 0 < fast < slow / 5 and 0 < fast2 < slow2 / 5


def test_speed_is_reported_with_size_and_accuracy(tmp_path: Path, fp32: Path, data: Path) -> None:
    from edgecnn.export import quantize

    r = quantize(fp32, data / "train", tmp_path / "q.int8.onnx", calib_size=16, eval_dir=data / "val", force=True,
                 speed_seconds=0.2)
    assert r.fp32_ms and r.quant_ms and r.speedup == pytest.approx(r.fp32_ms / r.quant_ms)
    assert (r.recommendation is None) == (r.speedup >= Q.MIN_SPEEDUP)
    skipped = quantize(fp32, data / "train", tmp_path / "s.int8.onnx", calib_size=16, speed_seconds=0)
    assert skipped.fp32_ms is skipped.quant_ms is skipped.speedup is skipped.recommendation is None
    cli_run = CliRunner().invoke(cli, ["quantize", str(fp32), "--calib", str(data / "train"), "--calib-size", "16",
                                       "-o", str(tmp_path / "c.int8.onnx"), "--speed-seconds", "0.2"])
    assert cli_run.exit_code == 0, cli_run.output
    assert "speed on this CPU (batch 1, 1 thread): FP32 " in cli_run.output


@pytest.mark.parametrize("speedup, advice", [(1.5, None), (1.1, "only 1.10x as fast as FP32"), (0.8, "slower than FP32")])
def test_speed_advice(speedup: float, advice: str | None) -> None:
    r = Q.QuantizeResult(path=Path("m.int8.onnx"), written=True, passed=True, precision="int8", method="minmax",
                         per_channel=True, calib_images=8, fp32_bytes=300, quant_bytes=100, size_ratio=3.0,
                         agreement=1.0, agreement_on="calibration", agreement_images=8,
                         fp32_ms=1.0, quant_ms=1.0 / speedup, speedup=speedup)
    text = Q.speed_advice(r)
    if advice is None:
        assert text is None
    else:
        assert text is not None and advice in text and "ship the FP32 model" in text and "3.0x smaller" in text
