"""Baselines compared in the paper, with the same API as :class:`Alignment`.

* :class:`RandomNoise` — random ±ε per pixel (the strongest ℓ∞ noise of its size).
* :class:`TensorClog` — minimise the norm of the crafting gradient so training makes no progress.
* :class:`Unlearnable` — error-minimising noise (Huang et al. 2021) against a fixed surrogate θ:
  minimise each image's own training loss so the images look "already learnt".
"""
from __future__ import annotations

import torch
from torch import Tensor

from faceguard.attacks.base import Perturbation, PGDAttack
from faceguard.gradients import flat_norm, param_gradient


class RandomNoise(Perturbation):
    """Uniformly random sign noise of magnitude ε on every pixel and channel."""

    name = "random"
    data_free = True

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        signs = torch.randint(0, 2, x.shape, device=x.device, dtype=x.dtype) * 2 - 1
        return self.project(x, signs * self.radius)


class TensorClog(PGDAttack):
    """Minimise ‖∇θ Σ_i CE(F(x_i + Δ_i), y_i)‖² over the batch (best restart per batch)."""

    name = "tensorclog"

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        grads = param_gradient(self.model, self.params, x_in, y, self.loss_fn, create_graph=True)
        return flat_norm(grads).pow(2)

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        return flat_norm(param_gradient(self.model, self.params, x_in, y, self.loss_fn)).pow(2)


class Unlearnable(PGDAttack):
    """Sample-wise error-minimising noise with θ fixed (best restart per image)."""

    name = "unlearnable"

    per_image = True

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(self.model, x_in, y).sum()

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.loss_fn(self.model, x_in, y)
