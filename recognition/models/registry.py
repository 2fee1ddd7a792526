"""timm-style model registry: families register factories by name, callers build by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory(width=..., [num_classes=...], **kwargs)`` under ``name``.

    Factories default ``num_classes`` themselves (it is only passed when the caller gives one).
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int | None = None, width: float = 1.0, **kwargs) -> nn.Module:
    """Build a registered model; extra kwargs (``in_channels``, ``mean``, ``std``) go to the family.

    ``num_classes`` is the output size: classes for classifiers, the embedding size for face
    backbones. ``None`` keeps the family's own default (10 for the CIFAR zoo, 512 for IR-ResNets).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return _REGISTRY[name](width=width, **kwargs)
