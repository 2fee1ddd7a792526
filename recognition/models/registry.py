"""timm-style model registry: families register factories by name, callers build by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory(num_classes, width, **kwargs)`` under ``name``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 10, width: float = 1.0, **kwargs) -> nn.Module:
    """Build a registered model; extra kwargs (``in_channels``, ``mean``, ``std``) go to the family."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, width=width, **kwargs)
