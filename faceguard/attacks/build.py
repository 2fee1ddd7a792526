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

    Methods that aim at something (``needs_target``) get ``target``: the alignment its target
    gradient, the evasion methods their per-person embedding anchors. ``needs`` (``loss_fn``,
    ``params``, ``preprocess``; only ``preprocess`` for evasion) go to methods that optimise an
    objective; ``classes`` (the number of classes) to every method that takes it.
    """
    method = METHODS.get(settings.method)
    if getattr(method, "needs_target", False):
        if target is None:
            raise ValueError(f"method {settings.method!r} needs a target (gradient or anchors)")
        return method(model, target, settings, **needs)
    if not getattr(method, "optimises", True):
        return method(model, settings, **{k: v for k, v in needs.items() if k == "classes"})
    return method(model, settings, **needs)
