"""Calibration: the measures, the temperature fit, folding into the last Linear, the training hook, eval, `edgecnn calibrate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecnn.calibration import ECE_BINS, expected_calibration_error, fit_temperature, nll, reliability
from edgecnn.calibration_run import fold_temperature, last_linear
from edgecnn.cli import cli
from edgecnn.runtime.decode import softmax

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _tints(root: Path, n: int, seed: int) -> None:
    """Noise images told apart by a tint of random strength: learnable in seconds, not trivially."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 150, (32, 32, 3)) + rng.integers(0, 60, 3)
            img[..., c] += int(rng.integers(15, 90))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def tint_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run, data, held-out test): tinycnn trained with the defaults, calibrated on val by train itself."""
    from edgecnn.train import TrainConfig, train

    data = tmp_path_factory.mktemp("tints")
    _tints(data / "train", 80, seed=0)
    _tints(data / "val", 60, seed=1)
    test = tmp_path_factory.mktemp("tints_test")
    _tints(test, 150, seed=2)
    run = tmp_path_factory.mktemp("cal_run") / "run"
    train(data, run, TrainConfig(arch="tinycnn", img_size=32, epochs=3, batch_size=16, lr=5e-3, device="cpu"), progress=False)
    return run, data, test


def test_ece_and_nll_by_hand() -> None:
    probs = np.array([[0.8, 0.2]] * 10)
    targets = np.array([0] * 5 + [1] * 5)  # 80% confident, 50% right
    assert expected_calibration_error(probs, targets) == pytest.approx(0.3)
    conf, acc, counts = reliability(probs, targets)
    assert counts.sum() == 10 and counts[int(np.ceil(0.8 * ECE_BINS)) - 1] == 10
    assert expected_calibration_error(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([0, 0])) == pytest.approx(0.25)
    logits = np.log(np.array([[0.25, 0.75]]))
    assert nll(logits, np.array([1])) == pytest.approx(-np.log(0.75))


def test_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 5))
    true_t = 0.5  # the labels follow softmax(logits / 0.5): the logits are underconfident, as after label smoothing
    p = softmax(logits / true_t)
    targets = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
    t = fit_temperature(logits, targets)
    assert t == pytest.approx(true_t, rel=0.05)
    assert nll(logits, targets, t) < nll(logits, targets, 1.0)
    assert expected_calibration_error(softmax(logits / t), targets) < expected_calibration_error(softmax(logits), targets)


def _torchvision_models():
    tv = pytest.importorskip("torchvision")
    m = tv.models
    return {
        "mobilenet_v2": (lambda: m.mobilenet_v2(num_classes=3), "classifier.1"),
        "mobilenet_v3_small": (lambda: m.mobilenet_v3_small(num_classes=3), "classifier.3"),
        "efficientnet_b0": (lambda: m.efficientnet_b0(num_classes=3), "classifier.1"),
        "shufflenet_v2_x0_5": (lambda: m.shufflenet_v2_x0_5(num_classes=3), "fc"),
        "resnet18": (lambda: m.resnet18(num_classes=3), "fc"),
    }


@pytest.mark.parametrize("name", ["tinycnn", "resnet8", "mobilenet_v1_025", *(
    ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "resnet18"])])
def test_fold_divides_the_logits_of_the_last_linear(name: str) -> None:
    from edgecnn.models import create_model, list_models

    torch.manual_seed(0)
    zoo = _torchvision_models() if name not in ("tinycnn", "resnet8", "mobilenet_v1_025") else {}
    expected = zoo[name][1] if name in zoo else "head.fc"
    # torchvision families may be registered in edgecnn's registry too: either way the same module is the head.
    model = (create_model(name, num_classes=3) if name in list_models() else zoo[name][0]()).eval()
    size = 32
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        before = model(x)
    layer, _ = last_linear(model, size)
    assert layer == expected
    assert fold_temperature(model, 0.5, size) == expected
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, before / 0.5, rtol=1e-4, atol=1e-5)


def test_logits_not_from_a_linear_are_refused() -> None:
    nn = torch.nn

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3))) * 2.0  # the Linear's output is not the logits

    with pytest.raises(ValueError, match="no-calibrate"):
        last_linear(Scaled(), 8)


def test_training_calibrates_and_lowers_ece_on_held_out_images(tint_run) -> None:
    """The real run: T fitted on val lowers the ECE on test images neither training nor calibration saw."""
    from edgecnn.calibration_run import model_logits
    from edgecnn.checkpoint import load_checkpoint
    from edgecnn.data import EvalSet, class_samples

    run, _, test = tint_run
    ckpt = load_checkpoint(run / "best.pt")
    cal = ckpt.data["calibration"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["calibration"] == cal and cal["bins"] == ECE_BINS and cal["layer"] == "head.fc"
    assert ckpt.data["ood"]["recall"] == 0.95
    assert (run / "reliability.png").is_file() and "Calibration" in (run / "report.html").read_text()
    t = cal["temperature"]
    assert t < 1, "label smoothing makes the model underconfident: sharper probabilities fit better"
    _, samples = class_samples(test, ckpt.spec.labels)
    data = EvalSet(samples, ckpt.spec)
    targets = np.asarray(data.targets)
    z = model_logits(ckpt.build_model(), data.images, ckpt.spec)  # calibrated: the folded weights
    ece_after = expected_calibration_error(softmax(z), targets)
    ece_before = expected_calibration_error(softmax(z * t), targets)  # undo the fold: what training left
    assert ece_after < ece_before, (ece_before, ece_after)
    assert (softmax(z).argmax(1) == softmax(z * t).argmax(1)).all()


def test_no_calibrate_leaves_best_pt_alone(tmp_path: Path) -> None:
    from edgecnn.checkpoint import load_checkpoint
    from edgecnn.synth import synthesize

    data = tmp_path / "d"
    synthesize(data, classes=2, per_class=10, size=32)
    result = CliRunner().invoke(cli, ["train", str(data), "-o", str(tmp_path / "r"), "--arch", "tinycnn", "--img-size", "32",
                                      "--epochs", "1", "--no-calibrate", "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "calibration" not in load_checkpoint(tmp_path / "r" / "best.pt").data
    assert not (tmp_path / "r" / "reliability.png").exists()


def test_eval_reports_ece_and_nll(tint_run, tmp_path: Path) -> None:
    run, data, _ = tint_run
    result = CliRunner().invoke(cli, ["eval", str(run / "best.pt"), str(data), "--json"])
    obj = json.loads(result.output)
    assert 0 <= obj["ece"] <= 1 and obj["nll"] > 0 and obj["ece_bins"] == ECE_BINS
    png = tmp_path / "rel.png"
    text = CliRunner().invoke(cli, ["eval", str(run / "best.pt"), str(data), "-o", str(png)])
    assert text.exit_code == 0 and "ECE" in text.output
    assert Image.open(png).size[0] > 100


def test_calibrate_onnx_keeps_metadata_and_scales_the_logits(tint_run, tmp_path: Path) -> None:
    import onnxruntime as ort

    from edgecnn.export import export_onnx
    from edgecnn.runtime.spec import META_OOD, META_SPEC, META_TEMPERATURE

    run, data, test = tint_run
    model = export_onnx(run / "best.pt", tmp_path / "m.onnx").path
    out = tmp_path / "cal.onnx"
    result = CliRunner().invoke(cli, ["calibrate", str(model), "--data", str(test), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.output)
    t = obj["temperature"]
    assert obj["source"] == "logits" and obj["nll_after"] <= obj["nll_before"] + 1e-9
    old = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    new = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert new[META_SPEC] == old[META_SPEC]
    assert float(new[META_TEMPERATURE]) == pytest.approx(float(old[META_TEMPERATURE]) * t)
    assert json.loads(new[META_OOD])["recall"] == 0.95
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    z0, = ort.InferenceSession(str(model)).run(["logits"], {"pixels": pixels})
    z1, p1 = ort.InferenceSession(str(out)).run(["logits", "probabilities"], {"pixels": pixels})
    assert np.allclose(z1, z0 / t, atol=1e-5) and np.allclose(p1, softmax(z0 / t), atol=1e-5)

    # A foreign model with only a softmax output: fitted on log-probabilities, a Div inserted before its Softmax.
    proto = onnx.load(str(model))
    keep = [o for o in proto.graph.output if o.name == "probabilities"]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    labels = tmp_path / "labels.txt"
    labels.write_text("blue\ngreen\nred\n")
    out2 = tmp_path / "foreign.cal.onnx"
    result = CliRunner().invoke(cli, ["calibrate", str(foreign), "--data", str(test), "-o", str(out2), "--labels", str(labels),
                                      "--json"])
    assert result.exit_code == 0, result.output
    t2 = json.loads(result.output)["temperature"]
    assert json.loads(result.output)["source"] == "log-probabilities"
    p2, = ort.InferenceSession(str(out2)).run(["probabilities"], {"pixels": pixels})
    assert np.allclose(p2, softmax(z0 / t2), atol=1e-5)

    bad = CliRunner().invoke(cli, ["calibrate", str(model), "--data", str(tmp_path), "-o", str(tmp_path / "x.onnx")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
