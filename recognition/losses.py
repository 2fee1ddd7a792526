"""Training losses of the classifiers and face models here.

A training loss is called as ``loss_fn(model, images, labels)`` and returns the per-sample loss [B],
or (per-sample loss [B], logits [B, K]): returning the logits lets training report its accuracy.
(faceguard's crafting losses, :mod:`faceguard.losses`, return the per-sample loss alone.)
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

TrainingLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def cross_entropy_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Default loss: per-sample cross entropy of model(images), with the logits for accuracy."""
    logits = model(images)
    return F.cross_entropy(logits, labels, reduction="none"), logits


def margin_cross_entropy_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy of model(images, labels): margin heads (CosFace, ArcFace) need the labels."""
    logits = model(images, labels)
    return F.cross_entropy(logits, labels, reduction="none"), logits
