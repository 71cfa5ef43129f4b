"""A tiny ResNet in the spirit of the MLPerf Tiny image-classification reference (ResNet-8)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import ClassifierHead, ConvBNAct
from .registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = ConvBNAct(c_in, c_out, 3, stride)
        self.conv2 = ConvBNAct(c_out, c_out, 3, act=False)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else ConvBNAct(c_in, c_out, 1, stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetTiny(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64), stem_stride: int = 2):
        super().__init__()
        stages: list[nn.Module] = [ConvBNAct(3, widths[0], 3, stride=stem_stride)]
        c = widths[0]
        for i, w in enumerate(widths):
            stages.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.features = nn.Sequential(*stages)
        self.head = ClassifierHead(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(default_size=64)
def resnet8(num_classes: int, **kwargs) -> ResNetTiny:
    """ResNet-8 (16-32-64 channels), the MLPerf Tiny reference shape, with a stride-2 stem for photos."""
    return ResNetTiny(num_classes, widths=(16, 32, 64), **kwargs)


@register_model(default_size=64)
def resnet8_wide(num_classes: int, **kwargs) -> ResNetTiny:
    """ResNet-8 at twice the width (32-64-128): more accuracy for 4x the compute."""
    return ResNetTiny(num_classes, widths=(32, 64, 128), **kwargs)
