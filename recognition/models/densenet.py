"""CIFAR DenseNet-121 (kuangliu/pytorch-cifar): pre-activation bottlenecks, growth 32, reduction 0.5."""

from __future__ import annotations

import math

import torch
from torch import nn

from recognition.models.layers import ImageClassifier, scale_channels
from recognition.models.registry import register_model


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Pre-activation unit BN -> ReLU -> conv (no bias, 'same' padding), as DenseNet uses."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
    )


class Bottleneck(nn.Module):
    """1x1 (4*growth) then 3x3 (growth) pre-activation convs; output concatenated to the input."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(bn_relu_conv(in_channels, 4 * growth, 1), bn_relu_conv(4 * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.body(x), x], dim=1)


class DenseNet(ImageClassifier):
    """DenseNet with ``blocks`` bottlenecks per dense stage and 1x1-conv + avg-pool transitions."""

    def __init__(self, blocks: tuple[int, ...], growth: int = 32, reduction: float = 0.5,
                 num_classes: int = 10, width: float = 1.0, in_channels: int = 3, **kwargs):
        growth = scale_channels(growth, width)
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)]
        for stage, count in enumerate(blocks):
            for _ in range(count):
                layers.append(Bottleneck(channels, growth))
                channels += growth
            if stage < len(blocks) - 1:
                out_channels = max(1, math.floor(channels * reduction))
                layers += [bn_relu_conv(channels, out_channels, 1), nn.AvgPool2d(2)]
                channels = out_channels
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
        super().__init__(nn.Sequential(*layers), channels, num_classes, in_channels, **kwargs)


@register_model("densenet121")
def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121: [6, 12, 24, 16] bottlenecks, growth rate 32."""
    return DenseNet((6, 12, 24, 16), **kwargs)
