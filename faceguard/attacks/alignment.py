"""The paper's method: align the crafting gradient with the reverse-cross-entropy target gradient.

A(Δ) = 1 − ⟨T, G(Δ)⟩ / (‖T‖ ‖G(Δ)‖), G(Δ) = ∇θ Σ_i CE(F(x_i + Δ_i), y_i). Minimising A makes a
training step on the protected data look like a step that *increases* the loss on clean data.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from faceguard.attacks.base import PGDAttack, Preprocess
from faceguard.backends import AlignmentProblem, alignment_objective
from faceguard.gradients import per_sample_alignment
from faceguard.losses import LossFn
from faceguard.registry import BACKENDS
from faceguard.settings import CraftSettings


class Alignment(PGDAttack):
    """Gradient-alignment protection, ``x_adv = Alignment(model, T, eps=8)(x, y)``.

    Variants (``settings.variant``):
      * ``joint`` — the exact Eq. 3: one cosine between T and the gradient of the whole batch; the
        best restart is kept per batch.
      * ``independent`` (online) — the denominator ‖G‖ is detached, so the step of image i is the sign
        of −∇_{Δ_i}⟨T, ∇θ CE(x_i + Δ_i)⟩ times a positive scalar: each image's perturbation depends
        on that image alone (Proposition 1) and photos can be protected one at a time. The loss used
        to keep the best restart is each image's own 1 − cos(T, ∇θ CE(x_i + Δ_i)). With a regulariser
        the positive scalar sets its relative weight, so exact independence holds without one.

    ``settings.backend`` picks how ∇Δ A is computed (:mod:`faceguard.backends`). ``chunk_size``
    bounds the memory of the per-image losses (images per vmapped chunk).
    """

    name = "alignment"
    needs_target = True

    def __init__(self, model: nn.Module, target_grad: Sequence[Tensor], settings: CraftSettings | None = None, *,
                 loss_fn: LossFn | None = None, params: list[Tensor] | None = None,
                 preprocess: Preprocess | None = None, chunk_size: int = 16, **changes: object) -> None:
        super().__init__(model, settings, loss_fn=loss_fn, params=params, preprocess=preprocess, **changes)
        if len(target_grad) != len(self.params) or any(
                t.shape != p.shape for t, p in zip(target_grad, self.params)):
            raise ValueError("target_grad must have one tensor per crafting parameter, same shapes")
        self.variant, self.backend = self.settings.variant, self.settings.backend
        self.per_image = self.variant == "independent"
        self.target = [t.detach().to(p.device, p.dtype) for t, p in zip(target_grad, self.params)]
        self.chunk_size = chunk_size
        self.problem = AlignmentProblem(model, self.params, self.loss_fn, self.target, detach_norm=self.per_image,
                                        rel_step=self.settings.fd_step, refresh=self.settings.fd_refresh)
        self.gradient = BACKENDS.get(self.backend)(self.problem)

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        return alignment_objective(self.problem, x_in, y)

    def objective_gradient(self, x_in: Tensor, y: Tensor) -> tuple[Tensor, float]:
        return self.gradient(x_in, y)

    def _descend(self, x: Tensor, y: Tensor, delta: Tensor) -> list[float]:
        self.gradient.reset()  # every descent starts from a fresh G
        return super()._descend(x, y, delta)

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        if self.per_image:
            return per_sample_alignment(self.model, self.params, x_in, y, self.target,
                                        self.loss_fn, self.chunk_size)
        return alignment_objective(self.problem, x_in, y, create_graph=False).detach()
