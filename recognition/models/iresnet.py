"""IR-ResNet-18/34/50 face backbones (insightface "iresnet" / face.evoLVe "IR" style).

A face backbone maps an aligned face crop to an embedding; identities are learnt by a margin
head on top (``recognition.heads``). The architecture follows insightface's iresnet:

- stem: conv3x3(64) - BN - PReLU, stride 1;
- four stages of IR blocks with 64/128/256/512 channels, the first block of every stage
  downsampling by 2 (so the final map is input/16 on a side). An IR block is
  BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN plus an identity shortcut, or a
  conv1x1(stride)-BN projection where the shape changes;
- output layer: BN2d - Dropout - Flatten - Linear(512 * (H/16) * (W/16) -> embedding) - BN1d.

Inputs are [0, 1] images, normalised internally with mean 0.5 / std 0.5 (insightface's
``(x - 127.5) / 128`` up to a 0.4 % scale), so attacks can work in pixel space. The default input
is 112 x 112; ``input_size`` (a multiple of 16) sizes the Linear layer for other crops, e.g. 64
for CPU experiments on small faces. Like every model of the zoo the network also accepts other
square sizes: the final map is adaptively average-pooled to the (input_size / 16)^2 grid the
Linear layer expects, which is the identity at ``input_size``. ``width`` scales the channels,
not the embedding size. Activations are PReLU (piecewise linear, so the twice-differentiated
gradient-matching objective is exact almost everywhere) and nothing is in-place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recognition.models.layers import Normalize, conv_bn, scale_channels
from recognition.models.registry import register_model

EMBEDDING_SIZE = 512
DOWNSAMPLING = 16  # four stride-2 stages


class IRBlock(nn.Module):
    """Improved residual block: BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            conv_bn(in_channels, out_channels, relu=False),
            nn.PReLU(out_channels),
            conv_bn(out_channels, out_channels, stride=stride, relu=False),
        )
        self.shortcut = (
            conv_bn(in_channels, out_channels, kernel_size=1, stride=stride, relu=False)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    """IR-ResNet backbone producing ``num_classes``-dimensional (default 512) face embeddings.

    ``blocks`` gives the number of IR blocks in each of the four stages; ``dropout`` is the
    probability of the output layer's dropout (0, as in insightface; face.evoLVe uses 0.5).
    """

    def __init__(
        self,
        blocks: Sequence[int],
        num_classes: int = EMBEDDING_SIZE,
        width: float = 1.0,
        in_channels: int = 3,
        input_size: int = 112,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        if input_size < DOWNSAMPLING or input_size % DOWNSAMPLING:
            raise ValueError(f"input_size must be a positive multiple of {DOWNSAMPLING}, got {input_size}")
        self.input_size = input_size
        self.normalize = Normalize((0.5,) * in_channels if mean is None else mean,
                                   (0.5,) * in_channels if std is None else std)
        if self.normalize.mean.shape[1] not in (1, in_channels):
            raise ValueError(f"normalisation statistics have {self.normalize.mean.shape[1]} channels, "
                             f"input has {in_channels}")
        channels = scale_channels(64, width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, relu=False), nn.PReLU(channels)]
        for stage, count in enumerate(blocks):
            out_channels = scale_channels(64 * 2**stage, width)
            for i in range(count):
                layers.append(IRBlock(channels, out_channels, stride=2 if i == 0 else 1))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        grid = input_size // DOWNSAMPLING
        self.output = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.Dropout(dropout),
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Linear(channels * grid * grid, num_classes),
            nn.BatchNorm1d(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(self.normalize(x)))


@register_model("ir18")
def ir18(**kwargs) -> IResNet:
    """IR-ResNet-18: [2, 2, 2, 2] IR blocks."""
    return IResNet((2, 2, 2, 2), **kwargs)


@register_model("ir34")
def ir34(**kwargs) -> IResNet:
    """IR-ResNet-34: [3, 4, 6, 3] IR blocks."""
    return IResNet((3, 4, 6, 3), **kwargs)


@register_model("ir50")
def ir50(**kwargs) -> IResNet:
    """IR-ResNet-50: [3, 4, 14, 3] IR blocks (face.evoLVe's IR-50)."""
    return IResNet((3, 4, 14, 3), **kwargs)
