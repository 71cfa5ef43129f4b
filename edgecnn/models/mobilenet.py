"""MobileNetV1-style networks: depthwise-separable convolutions with a width multiplier (Howard et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import ClassifierHead, ConvBNAct, make_divisible
from .registry import register_model

# (output channels at width 1.0, stride) of each depthwise-separable block.
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(
            ConvBNAct(c_in, c_in, 3, stride, groups=c_in),  # depthwise: one 3x3 filter per channel
            ConvBNAct(c_in, c_out, 1),  # pointwise: mixes channels
        )


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, dropout: float = 0.1):
        super().__init__()
        c = make_divisible(32 * width)
        stages: list[nn.Module] = [ConvBNAct(3, c, 3, stride=2)]
        for channels, stride in _BLOCKS:
            c_out = make_divisible(channels * width)
            stages.append(DepthwiseSeparable(c, c_out, stride))
            c = c_out
        self.features = nn.Sequential(*stages)
        self.head = ClassifierHead(c, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(default_size=96)
def mobilenet_v1_025(num_classes: int, **kwargs) -> MobileNetV1:
    """MobileNetV1, width 0.25: the smallest, for microcontroller-class budgets."""
    return MobileNetV1(num_classes, width=0.25, **kwargs)


@register_model(default_size=96)
def mobilenet_v1_050(num_classes: int, **kwargs) -> MobileNetV1:
    """MobileNetV1, width 0.5: depthwise-separable, a quarter of the compute of width 1.0."""
    return MobileNetV1(num_classes, width=0.5, **kwargs)


@register_model(default_size=96)
def mobilenet_v1_100(num_classes: int, **kwargs) -> MobileNetV1:
    """MobileNetV1, width 1.0: the most accurate of the family, 4x the compute of width 0.5."""
    return MobileNetV1(num_classes, width=1.0, **kwargs)
