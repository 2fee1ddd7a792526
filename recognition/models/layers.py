"""Building blocks shared by every CIFAR-style network in the zoo.

All models take images in [0, 1] (NCHW) and normalise them internally, so that
attacks and defences can work in pixel space without knowing the statistics.
Everything here is twice differentiable (no in-place activations), because the
models are differentiated twice (gradient of a parameter gradient w.r.t. input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet preprocessing
IMAGENET_STD = (0.229, 0.224, 0.225)


def scale_channels(channels: int, width: float) -> int:
    """Scale a channel count by the width multiplier, rounding to an int >= 1."""
    return max(1, int(round(channels * width)))


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics kept as buffers (not trained)."""

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    relu: bool = True,
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional ReLU: the workhorse of the zoo."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ImageClassifier(nn.Module):
    """Normalize -> family-specific ``features`` -> global average pool -> linear classifier.

    Adaptive pooling makes every family accept any square input large enough for its
    downsampling. Families subclass this and only build ``features``.
    """

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        num_classes: int,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        # CIFAR-10 statistics for RGB; neutral 0.5/0.5 for other channel counts unless given.
        if in_channels != 3:
            mean = (0.5,) * in_channels if mean is None else mean
            std = (0.5,) * in_channels if std is None else std
        self.normalize = Normalize(CIFAR10_MEAN if mean is None else mean, CIFAR10_STD if std is None else std)
        if self.normalize.mean.shape[1] not in (1, in_channels):
            raise ValueError(f"normalisation statistics have {self.normalize.mean.shape[1]} channels, "
                             f"input has {in_channels}")
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.features(self.normalize(x)))
        return self.classifier(torch.flatten(out, 1))
