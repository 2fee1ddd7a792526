"""Availability poisons beside the paper's alignment, with the same API.

* :class:`AdversarialPoison` (``adversarial``) — class-targeted adversarial examples of the trained
  surrogate (Fowl et al., "Adversarial Examples Make Strong Poisons", NeurIPS 2021): every image of
  class y is pushed toward class (y + 1) mod C by minimising CE(F(x + Δ), (y + 1) mod C). A model
  trained on them learns the non-robust features of the wrong class, and generalises badly on clean
  data. Each image's objective is its own, so the best restart is kept per image.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from faceguard.attacks.base import PGDAttack
from faceguard.settings import CraftSettings


class AdversarialPoison(PGDAttack):
    """``AdversarialPoison(model, eps=8)(x, y)``: each image toward class ``(y + 1) mod C``.

    ``classes`` is C; without it C is read off the model's output width on the first image.
    """

    name = "adversarial"
    per_image = True

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, *, classes: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(model, settings, **kwargs)
        if classes is not None and classes < 2:
            raise ValueError(f"a class-targeted poison needs at least 2 classes, got {classes}")
        self.classes = classes

    def target_classes(self, y: Tensor) -> Tensor:
        """The class each image is pushed toward: the next one, cyclically."""
        return (y + 1) % self.classes

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.classes is None:
            with torch.no_grad():
                self.classes = int(self.model(self.model_input(x[:1], y[:1])).shape[-1])
        return super().perturb(x, y)

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(self.model, x_in, self.target_classes(y)).sum()

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.loss_fn(self.model, x_in, self.target_classes(y))
