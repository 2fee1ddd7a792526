"""Classification heads for face recognition: CosFace, ArcFace and a plain softmax (linear) head.

Margin heads keep one weight vector per identity (a class centre), normalise both centres and
embeddings, and add an angular margin to the target-class cosine during training. The margin is
computed entirely inside the autograd graph (no ``no_grad``, no ``detach``) so that second-order
gradients -- gradient of a parameter gradient w.r.t. the input, as gradient-matching poisoning
needs -- are exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _CosineMarginHead(nn.Module):
    """Scaled cosine logits ``s * cos(embedding, centre)`` with a margin on the target class.

    Subclasses implement ``margin(cos_target)``, the margin-adjusted target cosine.
    With ``labels=None`` no margin is applied (inference / verification).
    """

    def __init__(self, in_features: int, num_classes: int, s: float):
        super().__init__()
        self.s = s
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Class centres drawn afresh (N(0, 0.01²)), as ``nn.Linear.reset_parameters`` does for
        its weights: what a model re-initialised module by module expects."""
        nn.init.normal_(self.weight, std=0.01)

    def margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))
        if labels is not None:
            index = labels.view(-1, 1)
            cos = cos.scatter(1, index, self.margin(cos.gather(1, index)))  # out-of-place: differentiable
        return self.s * cos


class CosFace(_CosineMarginHead):
    """CosFace / LMCL (Wang et al., 2018): target logit ``s * (cos θ - m)``."""

    def __init__(self, in_features: int, num_classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__(in_features, num_classes, s)
        self.m = m

    def margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.m


class ArcFace(_CosineMarginHead):
    """ArcFace (Deng et al., 2019): target logit ``s * cos(θ + m)``, "easy margin" off.

    Uses ``cos(θ+m) = cos θ cos m - sin θ sin m`` with cos clamped away from ±1 inside the sqrt,
    so gradients stay finite at cos = ±1. Where ``θ + m > π`` (cos(θ+m) would stop decreasing in θ)
    it falls back to ``cos θ - m sin m``, as in insightface.
    """

    def __init__(self, in_features: int, num_classes: int, s: float = 64.0, m: float = 0.5, eps: float = 1e-7):
        super().__init__(in_features, num_classes, s)
        self.m = m
        self.eps = eps

    def margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        clamped = cos_target.clamp(-1.0 + self.eps, 1.0 - self.eps)
        sin_target = torch.sqrt(1.0 - clamped * clamped)
        with_margin = cos_target * math.cos(self.m) - sin_target * math.sin(self.m)
        fallback = cos_target - self.m * math.sin(self.m)
        return torch.where(cos_target > math.cos(math.pi - self.m), with_margin, fallback)


class SoftmaxHead(nn.Module):
    """Plain linear classifier (softmax-loss baseline); accepts and ignores ``labels``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(embeddings)


_HEADS: dict[str, type[nn.Module]] = {"cosface": CosFace, "arcface": ArcFace, "softmax": SoftmaxHead}


def create_head(name: str, in_features: int, num_classes: int, **kw) -> nn.Module:
    """Build a head by name ("cosface", "arcface", "softmax"); ``kw`` are e.g. ``s``, ``m``."""
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; known heads: {', '.join(sorted(_HEADS))}")
    return _HEADS[name](in_features, num_classes, **kw)


class MarginClassifier(nn.Module):
    """Backbone producing embeddings followed by a (margin) head: ``head(backbone(x), labels)``."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.backbone(x), labels)
