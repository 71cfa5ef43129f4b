"""Building blocks shared by the model families: plain modules that export cleanly to ONNX."""

from __future__ import annotations

import torch
import torch.nn as nn


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU; export folds the BatchNorm into the convolution."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ClassifierHead(nn.Module):
    """Global average and global max pooling side by side, dropout, linear layer to logits.

    Average pooling alone dilutes a small object among background features; the max branch keeps the
    strongest response of each feature (on the synthetic shapes: 39% -> 90%+ validation accuracy for
    the same training budget). Both export to single ONNX operators.
    """

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean/amax rather than AdaptiveAvg/MaxPool2d: every torch.onnx exporter version translates these
        # (torch 2.11's has no ONNX function for adaptive_max_pool2d); export turns them into pooling ops.
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)], dim=1)
        return self.fc(self.dropout(torch.flatten(pooled, 1)))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts to a multiple of 8, which vectorized int8 and fp32 kernels prefer."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)
