"""Per-sample losses used for the target gradient and for crafting.

Every loss here has the signature ``loss_fn(model, x, y) -> Tensor[B]`` (one value per image, no
reduction), so the crafting engine can sum, weight or vmap them, and so a model whose forward needs
the label (a margin head such as CosFace, ``model(x, y)``) plugs in with ``label_in_forward=True``.
All of them are twice differentiable: crafting differentiates a parameter gradient of these losses.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceguard.registry import OBJECTIVES

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def reverse_cross_entropy_from_logits(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample reverse cross-entropy ``−log(1 − softmax(logits)_y)``, numerically stable.

    Uses ``logsumexp(all logits) − logsumexp(logits without y)``, which stays finite when
    ``p_y → 1`` (where the naive ``log1p(-softmax)`` returns ``inf`` and a NaN gradient).
    """
    if logits.shape[1] < 2:
        raise ValueError("reverse cross-entropy needs at least two classes")
    label_mask = F.one_hot(y, logits.shape[1]).bool()
    others = logits.masked_fill(label_mask, float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(others, dim=1)


def _logits(model: nn.Module, x: Tensor, y: Tensor, label_in_forward: bool) -> Tensor:
    return model(x, y) if label_in_forward else model(x)


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor, label_in_forward: bool = False) -> Tensor:
    """Per-sample training loss CE(F(x), y): the loss whose parameter gradient is crafted."""
    return F.cross_entropy(_logits(model, x, y, label_in_forward), y, reduction="none")


def reverse_cross_entropy(model: nn.Module, x: Tensor, y: Tensor, label_in_forward: bool = False) -> Tensor:
    """Per-sample reverse cross-entropy −log(1 − p_y(x)): the loss of the target gradient T."""
    return reverse_cross_entropy_from_logits(_logits(model, x, y, label_in_forward), y)


def make_loss(name: str, label_in_forward: bool = False) -> LossFn:
    """A loss of :data:`faceguard.registry.OBJECTIVES` by name (``"ce"``, ``"rce"``, …);
    ``label_in_forward`` for models called as ``model(x, y)``."""
    base = OBJECTIVES.get(name)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return base(model, x, y, label_in_forward)

    loss_fn.__name__ = f"{name}{'_with_labels' if label_in_forward else ''}"
    return loss_fn
