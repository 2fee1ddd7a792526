"""Build the crafting method a :class:`~faceguard.settings.CraftSettings` names."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from faceguard.attacks.base import Perturbation
from faceguard.registry import METHODS
from faceguard.settings import CraftSettings


def build_attack(model: nn.Module, settings: CraftSettings, target: Sequence[Tensor] | None = None,
                 **needs: object) -> Perturbation:
    """``settings.method`` from :data:`~faceguard.registry.METHODS` on ``model``.

    Methods that take a target gradient (``needs_target``, the alignment) get ``target``; ``needs``
    (``loss_fn``, ``params``, ``preprocess``) go to methods that optimise an objective.
    """
    method = METHODS.get(settings.method)
    if getattr(method, "needs_target", False):
        if target is None:
            raise ValueError(f"method {settings.method!r} needs a target gradient")
        return method(model, target, settings, **needs)
    if not getattr(method, "optimises", True):
        return method(model, settings)
    return method(model, settings, **needs)
