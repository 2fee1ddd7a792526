"""CIFAR ResNet-18/34 (kuangliu/pytorch-cifar): 3x3 stem, four BasicBlock stages, no max-pool."""

from __future__ import annotations

import torch
from torch import nn

from recognition.models.layers import ImageClassifier, conv_bn, scale_channels
from recognition.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels, stride=stride),
            conv_bn(out_channels, out_channels, relu=False),
        )
        self.shortcut = (
            conv_bn(in_channels, out_channels, kernel_size=1, stride=stride, relu=False)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(ImageClassifier):
    """ResNet with BasicBlocks; ``blocks`` gives the number of blocks in each of the 4 stages."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 10, width: float = 1.0,
                 in_channels: int = 3, **kwargs):
        channels = scale_channels(64, width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels)]
        for stage, count in enumerate(blocks):
            out_channels = scale_channels(64 * 2**stage, width)
            for i in range(count):
                layers.append(BasicBlock(channels, out_channels, stride=2 if stage > 0 and i == 0 else 1))
                channels = out_channels
        super().__init__(nn.Sequential(*layers), channels, num_classes, in_channels, **kwargs)


@register_model("resnet18")
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: [2, 2, 2, 2] blocks."""
    return ResNet((2, 2, 2, 2), **kwargs)


@register_model("resnet34")
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: [3, 4, 6, 3] blocks."""
    return ResNet((3, 4, 6, 3), **kwargs)
