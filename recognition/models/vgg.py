"""CIFAR VGG-11/16/19 with BatchNorm (kuangliu/pytorch-cifar): 3x3 conv stacks and 5 max-pools."""

from __future__ import annotations

from torch import nn

from recognition.models.layers import ImageClassifier, conv_bn, scale_channels
from recognition.models.registry import register_model

# Output channels of each conv; "M" is a 2x2 max-pool.
_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(ImageClassifier):
    """VGG built from a config list; needs inputs of at least 32x32 (five 2x downsamplings)."""

    def __init__(self, config: list[int | str], num_classes: int = 10, width: float = 1.0,
                 in_channels: int = 3, **kwargs):
        channels = in_channels
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out_channels = scale_channels(int(item), width)
                layers.append(conv_bn(channels, out_channels))
                channels = out_channels
        super().__init__(nn.Sequential(*layers), channels, num_classes, in_channels, **kwargs)


def _register(name: str) -> None:
    """Register the VGG variant ``name`` from its config."""

    @register_model(name)
    def factory(**kwargs) -> VGG:
        return VGG(_CONFIGS[name], **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{name.upper()} with BatchNorm."


for _name in _CONFIGS:
    _register(_name)
