"""Evasion: move each face's embedding so that a pretrained recognizer stops matching its person.

Threat models (2) and (3): the protected photo is enrolled in, or a classifier is fitted on, a
recognizer that already exists; nothing is trained on the corpus, so poisoning a training step
(the alignment) does not reach it. These methods work on the embedding instead, over one
recognizer or an ensemble (the objective is the mean over its members):

* :class:`Evade` (``evade``, untargeted) — minimise cos(f(x + Δ), c_y), the cosine between the
  face's embedding and its person's clean centre c_y.
* :class:`Target` (``target``, Fawkes-style) — maximise cos(f(x + Δ), t_y), pulling the embedding
  toward the centre t_y of another identity chosen far from the person (:func:`farthest_anchors`).

``anchors`` holds, per ensemble member, a [P, D] tensor whose row p is person p's anchor (unit
length); a batch's labels ``y`` are person indices. Each image's objective involves that image
alone, so images are protected independently and the best restart is kept per image. The
settings' ``augment="scraper"`` crafts through what a scraper does to a photo (EOT), and a
``regularizer`` (e.g. ``ssim``) keeps the change less visible.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceguard.attacks.base import PGDAttack, Preprocess
from faceguard.settings import CraftSettings

Anchors = Sequence[Tensor]


class EmbeddingEnsemble(nn.Module):
    """Several embedding networks read as one: ``forward(x)`` returns one embedding per member.

    ``inputs`` gives each member the input map it needs (e.g. a resize to its chip size), or None
    to pass x unchanged; every map must be differentiable so the gradient reaches Δ.
    """

    def __init__(self, members: Sequence[nn.Module],
                 inputs: Sequence[Callable[[Tensor], Tensor] | None] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.inputs = list(inputs) if inputs is not None else [None] * len(self.members)
        if len(self.inputs) != len(self.members):
            raise ValueError(f"{len(self.members)} members but {len(self.inputs)} input maps")

    def forward(self, x: Tensor) -> list[Tensor]:
        return [member(x if to_input is None else to_input(x)) for member, to_input in zip(self.members, self.inputs)]


def embeddings_of(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Unit-length embeddings of x, one [B, D] tensor per member (one for a single network)."""
    out = model(x)
    return [F.normalize(e, dim=1) for e in (out if isinstance(out, (list, tuple)) else [out])]


@torch.no_grad()
def identity_centres(model: nn.Module, x: Tensor, people: Tensor, count: int | None = None) -> list[Tensor]:
    """Per member, the unit-length mean embedding of each person's images ([P, D]); ``people``
    holds person indices, ``count`` the number of people P (default: the largest index + 1)."""
    count = int(people.max()) + 1 if count is None else count
    centres = []
    for e in embeddings_of(model, x):
        sums = torch.zeros(count, e.shape[1], dtype=e.dtype, device=e.device).index_add_(0, people.to(e.device), e)
        centres.append(F.normalize(sums, dim=1))
    return centres


def farthest_anchors(centres: Anchors, candidates: Anchors) -> tuple[list[Tensor], Tensor]:
    """For each person, the candidate identity whose centre is least similar to theirs (mean cosine
    over the members): per member its [P, D] anchors, and the chosen candidate index per person."""
    similarity = torch.stack([c @ k.T for c, k in zip(centres, candidates)]).mean(0)  # [P, K]
    choice = similarity.argmin(1)
    return [k[choice] for k in candidates], choice


def anchor_similarity(embeddings: Sequence[Tensor], anchors: Anchors, index: Tensor | list[int]) -> Tensor:
    """Mean over the members of cos(e_i, anchor_{index_i}) for unit embeddings (one [B, D] tensor
    per member) and unit anchors (one [P, D] tensor per member): one value per row ([B])."""
    if len(embeddings) != len(anchors):
        raise ValueError(f"{len(embeddings)} embeddings but {len(anchors)} anchor sets")
    return torch.stack([(e * a.to(e.device)[index]).sum(1) for e, a in zip(embeddings, anchors)]).mean(0)


class EmbeddingAttack(PGDAttack):
    """Shared by the evasion methods: the per-image objective ``sign`` · mean cos(f(x + Δ), anchor_y)."""

    per_image = True
    needs_target = True
    sign = 1.0  # +1 minimises the cosine to the anchor (evade), −1 maximises it (target)

    def __init__(self, model: nn.Module, anchors: Anchors, settings: CraftSettings | None = None, *,
                 preprocess: Preprocess | None = None, **changes: object) -> None:
        super().__init__(model, settings, loss_fn=self.similarity_loss, params=[], preprocess=preprocess, **changes)
        self.anchors = [F.normalize(a.detach().float(), dim=1) for a in anchors]

    def similarity(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean over the members of cos(f(x_i), anchor_{y_i}), one value per image ([B])."""
        return anchor_similarity(embeddings_of(self.model, x), self.anchors, y)

    def similarity_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The per-image loss that is minimised ([B])."""
        return self.sign * self.similarity(x, y)

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        return self.similarity_loss(self.model, x_in, y).sum()

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.similarity_loss(self.model, x_in, y)


class Evade(EmbeddingAttack):
    """Untargeted evasion: ``Evade(recognizer, centres, eps=8)(x, people)`` moves each embedding
    away from its person's clean centre."""

    name = "evade"
    sign = 1.0


class Target(EmbeddingAttack):
    """Targeted evasion (Fawkes-style): ``Target(recognizer, targets, eps=8)(x, people)`` pulls each
    embedding toward its person's target anchor (e.g. from :func:`farthest_anchors`)."""

    name = "target"
    sign = -1.0
