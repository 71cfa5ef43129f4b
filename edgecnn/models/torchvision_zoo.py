"""The usual edge backbones from torchvision, each with the data config its ImageNet weights expect.

    model = create_model("mobilenet_v3_small", num_classes=5)    # random weights; see edgecnn.transfer for ImageNet's
    model_info("efficientnet_b0").interpolation                  # 'bicubic'

torchvision is imported inside the entry points: importing it costs about 3 s, which every command that
touches the registry would otherwise pay. The data configs below are torchvision's own figures (each
``Weights.DEFAULT``'s ``transforms()`` and ``meta["_metrics"]``); tests/test_zoo.py reads the enums and
fails if any of them drifts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import register_model

if TYPE_CHECKING:
    import torch.nn as nn


def _tv(name: str, num_classes: int, **kwargs) -> nn.Module:
    import torchvision.models

    # weights=None: random weights; pretrained ones are loaded and re-headed by edgecnn.transfer.
    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kwargs)


@register_model(default_size=224, crop_pct=224 / 232, classifier="classifier.1",
                weights="MobileNet_V2_Weights.IMAGENET1K_V2", imagenet_top1=72.154)
def mobilenet_v2(num_classes: int, **kwargs) -> nn.Module:
    """MobileNetV2 (torchvision): inverted residuals and linear bottlenecks, the classic edge backbone."""
    return _tv("mobilenet_v2", num_classes, **kwargs)


@register_model(default_size=224, crop_pct=0.875, classifier="classifier.3",
                weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1", imagenet_top1=67.668)
def mobilenet_v3_small(num_classes: int, **kwargs) -> nn.Module:
    """MobileNetV3-Small (torchvision): hardswish and squeeze-excite, the cheapest of the zoo."""
    return _tv("mobilenet_v3_small", num_classes, **kwargs)


@register_model(default_size=224, crop_pct=224 / 232, classifier="classifier.3",
                weights="MobileNet_V3_Large_Weights.IMAGENET1K_V2", imagenet_top1=75.274)
def mobilenet_v3_large(num_classes: int, **kwargs) -> nn.Module:
    """MobileNetV3-Large (torchvision): hardswish and squeeze-excite, MobileNetV2's cost, more accurate."""
    return _tv("mobilenet_v3_large", num_classes, **kwargs)


@register_model(default_size=224, crop_pct=0.875, interpolation="bicubic", classifier="classifier.1",
                weights="EfficientNet_B0_Weights.IMAGENET1K_V1", imagenet_top1=77.692)
def efficientnet_b0(num_classes: int, **kwargs) -> nn.Module:
    """EfficientNet-B0 (torchvision): SiLU and squeeze-excite; the most accurate of the zoo per MAC."""
    return _tv("efficientnet_b0", num_classes, **kwargs)


@register_model(default_size=224, crop_pct=0.875, classifier="fc",
                weights="ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1", imagenet_top1=69.362)
def shufflenet_v2_x1_0(num_classes: int, **kwargs) -> nn.Module:
    """ShuffleNetV2 1.0x (torchvision): channel split and shuffle, few MACs, plain ReLU."""
    return _tv("shufflenet_v2_x1_0", num_classes, **kwargs)


@register_model(default_size=224, crop_pct=0.875, classifier="fc",
                weights="ResNet18_Weights.IMAGENET1K_V1", imagenet_top1=69.758)
def resnet18(num_classes: int, **kwargs) -> nn.Module:
    """ResNet-18 (torchvision): plain 3x3 convolutions, 1.8 GMACs; fast where depthwise kernels are slow."""
    return _tv("resnet18", num_classes, **kwargs)
