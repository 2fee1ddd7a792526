"""timm-style model registry: families register factories by name, callers build by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from recognition.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS = Registry("model")
_PRETRAINED: set[str] = set()


def register_model(name: str, pretrained: bool = False) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory(width=..., [num_classes=...], **kwargs)`` under ``name``.

    Factories default ``num_classes`` themselves (it is only passed when the caller gives one).
    ``pretrained`` marks a fixed network with shipped weights (e.g. ``dlib-resnet``): it has one
    width and one output size, and is not trained by the project.
    """
    if pretrained:
        _PRETRAINED.add(name)
    return MODELS.register(name)


def list_models(pretrained: bool | None = None) -> list[str]:
    """Sorted names of the registered models: all of them, only the pretrained ones (``True``) or
    only the trainable architectures (``False``)."""
    return [name for name in MODELS.names() if pretrained is None or (name in _PRETRAINED) == pretrained]


def create_model(name: str, num_classes: int | None = None, width: float = 1.0, **kwargs) -> nn.Module:
    """Build a registered model; extra kwargs (``in_channels``, ``mean``, ``std``) go to the family.

    ``num_classes`` is the output size: classes for classifiers, the embedding size for face
    backbones. ``None`` keeps the family's own default (10 for the CIFAR zoo, 512 for IR-ResNets).
    """
    factory = MODELS.get(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return factory(width=width, **kwargs)
