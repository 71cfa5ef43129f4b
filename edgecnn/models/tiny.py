"""A three-layer CNN: the smallest useful classifier, for tests and microcontroller-sized budgets."""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import ClassifierHead, ConvBNAct
from .registry import register_model


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, width, 3, stride=2),
            ConvBNAct(width, width * 2, 3, stride=2),
            ConvBNAct(width * 2, width * 4, 3, stride=2),
        )
        self.head = ClassifierHead(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(default_size=32)
def tinycnn(num_classes: int, **kwargs) -> TinyCNN:
    """Three strided 3x3 convolutions (16-32-64 channels): trains in seconds."""
    return TinyCNN(num_classes, **kwargs)
