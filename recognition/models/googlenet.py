"""CIFAR GoogLeNet (kuangliu/pytorch-cifar): 3x3 stem and nine Inception blocks, two max-pools."""

from __future__ import annotations

import torch
from torch import nn

from recognition.models.layers import ImageClassifier, conv_bn, scale_channels
from recognition.models.registry import register_model

# Per Inception block: (1x1, 3x3-reduce, 3x3, double-3x3-reduce, double-3x3, pool-proj); "M" = max-pool.
_CONFIG: list[tuple[int, ...] | str] = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3-3x3; pool-1x1) concatenated on channels."""

    def __init__(self, in_channels: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int,
                 pool_planes: int):
        super().__init__()
        self.branches = nn.ModuleList([
            conv_bn(in_channels, n1x1, kernel_size=1),
            nn.Sequential(conv_bn(in_channels, n3x3red, kernel_size=1), conv_bn(n3x3red, n3x3)),
            nn.Sequential(conv_bn(in_channels, n5x5red, kernel_size=1), conv_bn(n5x5red, n5x5),
                          conv_bn(n5x5, n5x5)),
            nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(in_channels, pool_planes, kernel_size=1)),
        ])
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class GoogLeNet(ImageClassifier):
    """GoogLeNet for 32x32 inputs (stride-1 stem, pooling only between Inception groups)."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, **kwargs):
        channels = scale_channels(192, width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels)]
        for item in _CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            else:
                block = Inception(channels, *(scale_channels(c, width) for c in item))
                layers.append(block)
                channels = block.out_channels
        super().__init__(nn.Sequential(*layers), channels, num_classes, in_channels, **kwargs)


@register_model("googlenet")
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet (Inception v1) for CIFAR."""
    return GoogLeNet(**kwargs)
