"""CIFAR MobileNetV2 (kuangliu/pytorch-cifar): stride-1 stem and second stage, ReLU activations."""

from __future__ import annotations

import torch
from torch import nn

from recognition.models.layers import ImageClassifier, conv_bn, scale_channels
from recognition.models.registry import register_model

# (expansion, out_channels, num_blocks, stride of the first block)
_CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; shortcut on stride-1 blocks."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = expansion * in_channels
        self.body = nn.Sequential(
            conv_bn(in_channels, hidden, kernel_size=1),
            conv_bn(hidden, hidden, stride=stride, groups=hidden),
            conv_bn(hidden, out_channels, kernel_size=1, relu=False),
        )
        self.shortcut: nn.Module | None = None
        if stride == 1:
            self.shortcut = (nn.Identity() if in_channels == out_channels
                             else conv_bn(in_channels, out_channels, kernel_size=1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class MobileNetV2(ImageClassifier):
    """MobileNetV2 adapted to 32x32 inputs (8x total downsampling)."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, **kwargs):
        channels = scale_channels(32, width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels)]
        for expansion, out, count, first_stride in _CONFIG:
            out_channels = scale_channels(out, width)
            for i in range(count):
                layers.append(InvertedResidual(channels, out_channels, expansion, first_stride if i == 0 else 1))
                channels = out_channels
        last = scale_channels(1280, width)
        layers.append(conv_bn(channels, last, kernel_size=1))
        super().__init__(nn.Sequential(*layers), last, num_classes, in_channels, **kwargs)


@register_model("mobilenetv2")
def mobilenetv2(**kwargs) -> MobileNetV2:
    """MobileNetV2 for CIFAR."""
    return MobileNetV2(**kwargs)
