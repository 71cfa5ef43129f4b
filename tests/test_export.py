"""Export: parity with PyTorch, the in-graph uint8 preprocessing, metadata, clean graph, atomic writes, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecnn.cli import cli
from edgecnn.runtime.spec import (
    META_ARCH,
    META_CHECKPOINT_SHA256,
    META_INPUT,
    META_OPSET,
    META_PRECISION,
    META_SPEC,
    META_VERSION,
    PreprocessSpec,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _val_pixels(shapes_dir: Path, spec: PreprocessSpec) -> np.ndarray:
    from edgecnn.runtime.preprocess import preprocess

    return np.stack([preprocess(p, spec) for p in sorted((shapes_dir / "val").rglob("*.png"))])


def _torch_probs(checkpoint: Path, pixels: np.ndarray) -> np.ndarray:
    from edgecnn.checkpoint import load_checkpoint
    from edgecnn.train import pixels_to_tensor

    ckpt = load_checkpoint(checkpoint)
    with torch.no_grad():
        logits = ckpt.build_model()(pixels_to_tensor(torch.from_numpy(pixels), ckpt.spec, torch.device("cpu")))
    return torch.softmax(logits, 1).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, shapes_dir: Path):
    from edgecnn.export import export_onnx

    out = tmp_path_factory.mktemp("export") / "model.onnx"
    return export_onnx(checkpoint, out, verify_dir=shapes_dir / "val")


def test_parity_with_torch_on_real_images(exported, checkpoint: Path, shapes_dir: Path) -> None:
    from edgecnn.checkpoint import load_checkpoint

    spec = load_checkpoint(checkpoint).spec
    assert exported.real_images == 36 and exported.verified_images == 36 + 16
    assert exported.max_prob_diff <= 1e-4 and exported.top1_agreement == 1.0
    pixels = _val_pixels(shapes_dir, spec)  # checked again here, independently of the exporter's own check
    got = _session(exported.path).run(["probabilities"], {"pixels": pixels})[0]
    want = _torch_probs(checkpoint, pixels)
    assert np.abs(got - want).max() <= 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


def test_graph_is_self_contained_and_clean(exported) -> None:
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert list(exported.path.parent.iterdir()) == [exported.path]  # no side files, no temporaries
    ops = [n.op_type for n in model.graph.node]
    for op in ("Shape", "Range", "Unsqueeze", "Gather", "Reshape", "BatchNormalization", "Mul"):
        assert op not in ops, ops  # Mul: 1/(255*std) is folded into the first convolution
    assert ops[:3] == ["Cast", "Sub", "Transpose"] and ops.count("Cast") == 1 and ops[-1] == "Softmax"
    (inp,) = model.graph.input
    assert inp.name == "pixels" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]


def test_dynamic_batch(exported) -> None:
    session = _session(exported.path)
    for n in (1, 5):
        logits, probs = session.run(None, {"pixels": np.zeros((n, 32, 32, 3), np.uint8)})
        assert logits.shape == probs.shape == (n, 3)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_metadata_round_trip(exported, checkpoint: Path) -> None:
    import edgecnn
    from edgecnn.checkpoint import file_sha256, load_checkpoint

    model = onnx.load(str(exported.path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert PreprocessSpec.from_json(meta[META_SPEC]) == load_checkpoint(checkpoint).spec
    assert meta[META_INPUT] == "uint8-nhwc" and meta[META_ARCH] == "tinycnn" and meta[META_PRECISION] == "fp32"
    assert meta[META_VERSION] == edgecnn.__version__
    assert meta[META_CHECKPOINT_SHA256] == file_sha256(checkpoint)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert meta[META_OPSET] == str(opset) == "18"
    # Training calibrated the checkpoint, so the temperature and the unknown-input rule travel with it too.
    ckpt = load_checkpoint(checkpoint).data
    assert json.loads(meta["edgecnn.ood"]) == ckpt["ood"]
    assert float(meta["edgecnn.temperature"]) == ckpt["calibration"]["temperature"]
    assert set(meta) == {META_SPEC, META_INPUT, META_ARCH, META_VERSION, META_CHECKPOINT_SHA256, META_OPSET, META_PRECISION,
                         "edgecnn.ood", "edgecnn.temperature"}


def _identity_graph(size: int):
    """A float NCHW 'model' that returns its input through a 1x1 identity convolution."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["logits"])], "identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, size, size])],
                              [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("fold_scale", [True, False])
def test_uint8_preprocessing_matches_torch_within_one_level(fold_scale: bool) -> None:
    from edgecnn.export.graph import add_uint8_preprocessing
    from edgecnn.train import pixels_to_tensor

    spec = PreprocessSpec(size=16, labels=("a", "b"), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    model = add_uint8_preprocessing(_identity_graph(16), spec, fold_scale=fold_scale)
    assert ("Mul" in [n.op_type for n in model.graph.node]) is not fold_scale
    pixels = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    pixels[0] = 0
    pixels[1] = 255
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": pixels})[0]
    want = pixels_to_tensor(torch.from_numpy(pixels), spec, torch.device("cpu")).numpy()
    level = 1.0 / (255.0 * np.array(spec.std)).reshape(1, 3, 1, 1)  # one pixel level, per channel
    assert (np.abs(got - want) < level).all()
    assert np.abs(got - want).max() < 1e-5  # in fact equal to float rounding


def test_float_input_fixed_batch(tmp_path: Path, checkpoint: Path, exported) -> None:
    from edgecnn.export import export_onnx
    from edgecnn.runtime.preprocess import normalize

    result = export_onnx(checkpoint, tmp_path / "f.onnx", batch=2, input="float-nchw")
    assert result.batch == 2 and result.input == "float-nchw"
    (inp,) = onnx.load(str(result.path)).graph.input
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [2, 3, 32, 32]
    spec = PreprocessSpec.from_json({p.key: p.value for p in onnx.load(str(result.path)).metadata_props}[META_SPEC])
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    p_float = _session(result.path).run(["probabilities"], {"input": normalize(pixels, spec)})[0]
    p_uint8 = _session(exported.path).run(["probabilities"], {"pixels": pixels})[0]
    assert np.abs(p_float - p_uint8).max() <= 1e-4


def test_failed_verification_leaves_old_file_and_no_temporary(tmp_path: Path, checkpoint: Path) -> None:
    from edgecnn.export import ExportError, export_onnx

    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    with pytest.raises(ExportError, match="verification failed"):
        export_onnx(checkpoint, out, tolerance=-1.0)  # nothing can agree within a negative tolerance
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    with pytest.raises(ExportError):
        export_onnx(checkpoint, tmp_path / "new.onnx", tolerance=-1.0)
    assert not (tmp_path / "new.onnx").exists()


@pytest.mark.parametrize("kw, match", [({"opset": 12}, "opset 12"), ({"batch": 0}, "batch"),
                                       ({"input": "rgb"}, "input must be")])
def test_bad_options(tmp_path: Path, checkpoint: Path, kw: dict, match: str) -> None:
    from edgecnn.export import ExportError, export_onnx

    with pytest.raises(ExportError, match=match):
        export_onnx(checkpoint, tmp_path / "m.onnx", **kw)


def test_cli_bad_checkpoint_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    result = CliRunner().invoke(cli, ["export", str(bad), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "not a loadable checkpoint" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_json(tmp_path: Path, checkpoint: Path, shapes_dir: Path) -> None:
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "-o", str(out), "--verify", str(shapes_dir / "val"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["path"] == str(out) and data["real_images"] == 36 and data["max_prob_diff"] <= 1e-4
    assert out.is_file()
    bad = CliRunner().invoke(cli, ["export", str(checkpoint), "--batch", "many"])
    assert bad.exit_code == 2 and "dynamic" in bad.output
