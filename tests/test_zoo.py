"""Every registered architecture exports with the parity check and quantizes to INT8; the zoo's data configs
are torchvision's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgecnn.checkpoint import FORMAT, save_checkpoint
from edgecnn.models import create_model, list_models, model_info
from edgecnn.runtime.spec import PreprocessSpec

SIZE = 32  # the smallest side every family takes: keeps 12 exports and quantizations to a few minutes
ZOO = [n for n in list_models() if model_info(n).weights]


def test_zoo_is_registered() -> None:
    assert set(ZOO) >= {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
                        "shufflenet_v2_x1_0", "resnet18"}


@pytest.mark.parametrize("name", ZOO)
def test_data_config_is_torchvisions(name: str) -> None:
    """Size, crop, interpolation, mean, std and top-1 as each Weights enum states them (read offline)."""
    import torchvision.models

    info = model_info(name)
    weights = torchvision.models.get_weight(info.weights)
    assert weights == torchvision.models.get_model_weights(name).DEFAULT  # the weights --pretrained loads
    t = weights.transforms()
    assert info.default_size == t.crop_size[0]
    spec = PreprocessSpec(size=info.default_size, crop_pct=info.crop_pct)
    assert spec.resize == t.resize_size[0]
    assert info.interpolation == t.interpolation.value
    assert info.mean == pytest.approx(tuple(t.mean)) and info.std == pytest.approx(tuple(t.std))
    assert info.imagenet_top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    # The classifier that training replaces is the layer whose output is the classes.
    layer = create_model(name, num_classes=7).get_submodule(info.classifier)
    assert isinstance(layer, torch.nn.Linear) and layer.out_features == 7


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Draw every BatchNorm's statistics and affine parameters, so that an untrained model's activations (and
    answers) differ from image to image instead of sitting at the defaults' fixed point."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)


def _random_checkpoint(path: Path, name: str, seed: int = 0) -> PreprocessSpec:
    """A 2-class checkpoint with random weights whose outputs are not flat: BatchNorm statistics and the
    classifier are drawn so that the parity check compares probabilities that vary from image to image."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=2).eval()
    randomize_batchnorm(model)
    with torch.no_grad():
        head = model.get_submodule(model_info(name).classifier)
        head.weight.normal_(0, 1.0 / head.in_features ** 0.5)
    info = model_info(name)
    spec = PreprocessSpec(size=SIZE, labels=("a", "b"), crop_pct=info.crop_pct, interpolation=info.interpolation,
                          mean=info.mean, std=info.std)
    save_checkpoint(path, {"format": FORMAT, "arch": name, "model_args": {}, "spec": spec.to_dict(),
                           "state_dict": model.state_dict()})
    return spec


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecnn.synth import synthesize

    root = tmp_path_factory.mktemp("zoo-calib")
    synthesize(root, classes=2, per_class=8, size=SIZE, seed=0)
    return root / "train"


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_exports_with_parity_and_quantizes(name: str, tmp_path: Path, calib_dir: Path) -> None:
    import onnx

    from edgecnn.export import export_onnx, quantize
    from edgecnn.runtime.classifier import Classifier

    ckpt = tmp_path / "model.pt"
    spec = _random_checkpoint(ckpt, name)
    fp32 = export_onnx(ckpt, tmp_path / "model.onnx", verify_dir=calib_dir)
    assert fp32.max_prob_diff <= 1e-4 and fp32.top1_agreement == 1.0 and fp32.real_images == 12
    assert not [n for n in onnx.load(str(fp32.path)).graph.node if n.op_type == "BatchNormalization"]

    int8 = quantize(fp32.path, calib_dir, tmp_path / "model.int8.onnx", calib_size=6)
    assert int8.written and int8.precision == "int8" and int8.size_ratio > 2.0
    graph = onnx.load(str(int8.path)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 3
    # The runtime reads it with the architecture's preprocessing and returns a distribution over the 2 labels.
    clf = Classifier(int8.path)
    assert clf.spec == spec
    probs = clf.predict_pixels(np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(-1), 1.0, atol=1e-4)
