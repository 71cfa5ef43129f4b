"""Every registered model: shapes, finite outputs, gradients everywhere, MAC counts, export-friendliness."""

from __future__ import annotations

import pytest
import torch

from edgecnn.models import count_macs, count_params, create_model, list_models, model_info, validate_size


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [32])
def test_forward_shape_and_gradients(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, size + 8, size)  # not square: any multiple-of-8 size works
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", list_models())
def test_macs_and_params_are_counted(name: str) -> None:
    model = create_model(name, num_classes=10)
    size = model_info(name).default_size
    macs = count_macs(model, size)
    assert macs > count_params(model) > 0
    # MACs of a convolutional net grow with the pixel count.
    assert count_macs(model, size * 2) > 3.5 * macs


def test_tinycnn_macs_by_hand() -> None:
    model = create_model("tinycnn", num_classes=4)
    # 32x32 -> 16x16x16 -> 8x8x32 -> 4x4x64, 3x3 kernels, then a 128 -> 4 linear layer (avg+max pooled).
    expected = 16 * 16 * 16 * 3 * 9 + 8 * 8 * 32 * 16 * 9 + 4 * 4 * 64 * 32 * 9 + 4 * 128
    assert count_macs(model, 32) == expected


# One member of each family: widths change no graph structure.
@pytest.mark.parametrize("name", ["tinycnn", "resnet8", "mobilenet_v1_025"])
def test_traceable_without_data_dependent_control_flow(name: str) -> None:
    """torch.export captures a single graph with a dynamic batch: what the ONNX exporter needs."""
    model = create_model(name, num_classes=3).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    out = program.module()(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, 3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("resnet9000", num_classes=3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        create_model("tinycnn", num_classes=1)
    with pytest.raises(ValueError, match="multiple of 8"):
        validate_size(30)
