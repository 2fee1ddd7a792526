"""The paper's method: align the crafting gradient with the reverse-cross-entropy target gradient.

A(Δ) = 1 − ⟨T, G(Δ)⟩ / (‖T‖ ‖G(Δ)‖), G(Δ) = ∇θ Σ_i CE(F(x_i + Δ_i), y_i). Minimising A makes a
training step on the protected data look like a step that *increases* the loss on clean data.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from faceguard.attacks.base import PGDAttack, Preprocess
from faceguard.backends import BACKENDS, OneSidedAlignmentGradient, alignment_input_gradient
from faceguard.gradients import flat_dot, flat_norm, param_gradient, per_sample_alignment
from faceguard.losses import LossFn, cross_entropy
from faceguard.regularizers import Regularizer

VARIANTS = ("joint", "independent")


class Alignment(PGDAttack):
    """Gradient-alignment protection, ``x_adv = Alignment(model, T, eps=8/255)(x, y)``.

    Variants:
      * ``joint`` — the exact Eq. 3: one cosine between T and the gradient of the whole batch; the
        best restart is kept per batch.
      * ``independent`` (online) — the denominator ‖G‖ is detached, so the step of image i is the sign
        of −∇_{Δ_i}⟨T, ∇θ CE(x_i + Δ_i)⟩ times a positive scalar: each image's perturbation depends
        on that image alone (Proposition 1) and photos can be protected one at a time. The loss used
        to keep the best restart is each image's own 1 − cos(T, ∇θ CE(x_i + Δ_i)). With a regulariser
        the positive scalar sets its relative weight, so exact independence holds without one.

    ``backend`` picks how ∇Δ A is computed (see :mod:`faceguard.backends`): ``double`` (double
    backprop, exact), ``fd-frozen`` (finite difference with the activation pattern frozen: equal to
    ``double`` to O(h²), no second-order graph), ``fd-frozen-1s`` (its one-sided form, reusing the
    input gradient of the pass that computes G: one pass fewer), ``fd-frozen-lag`` (``fd-frozen-1s``
    with G recomputed only every ``fd_refresh`` steps and u built from the last one in between: not
    the exact gradient between refreshes), ``fd`` (plain finite difference).
    """

    def __init__(
        self,
        model: nn.Module,
        target_grad: Sequence[Tensor],
        eps: float = 8 / 255,
        steps: int = 240,
        restarts: int = 8,
        variant: str = "joint",
        augment: nn.Module | bool | None = None,
        regularizer: str | Regularizer | None = None,
        reg_weight: float = 0.0,
        loss_fn: LossFn = cross_entropy,
        params: list[Tensor] | None = None,
        step_size: float = 0.1,
        seed: int = 0,
        chunk_size: int = 16,
        backend: str = "double",
        fd_step: float = 1e-5,
        fd_refresh: int = 2,
        preprocess: Preprocess | None = None,
    ) -> None:
        super().__init__(model, eps, steps, restarts, step_size, augment, regularizer, reg_weight,
                         loss_fn, params, seed, preprocess)
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
        if len(target_grad) != len(self.params) or any(
                t.shape != p.shape for t, p in zip(target_grad, self.params)):
            raise ValueError("target_grad must have one tensor per crafting parameter, same shapes")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
        self.variant = variant
        self.backend, self.fd_step = backend, fd_step
        self.per_image = variant == "independent"
        self.target = [t.detach().to(p.device, p.dtype) for t, p in zip(target_grad, self.params)]
        self.target_norm = flat_norm(self.target)
        self.chunk_size = chunk_size
        self.one_sided = OneSidedAlignmentGradient(
            model, self.params, loss_fn, self.target, detach_norm=self.per_image,
            refresh=fd_refresh if backend == "fd-frozen-lag" else 1, rel_step=fd_step,
        ) if backend in ("fd-frozen-1s", "fd-frozen-lag") else None

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        grads = param_gradient(self.model, self.params, x_in, y, self.loss_fn, create_graph=True)
        grad_norm = flat_norm(grads)
        if self.per_image:
            grad_norm = grad_norm.detach()
        return 1 - flat_dot(self.target, grads) / (self.target_norm * grad_norm).clamp_min(1e-30)

    def objective_gradient(self, x_in: Tensor, y: Tensor) -> tuple[Tensor, float]:
        if self.backend == "double":
            return super().objective_gradient(x_in, y)
        if self.one_sided is not None:
            return self.one_sided(x_in, y)
        return alignment_input_gradient(
            self.model, self.params, x_in, y, self.loss_fn, self.target, detach_norm=self.per_image,
            frozen=self.backend == "fd-frozen", rel_step=self.fd_step)

    def _descend(self, x: Tensor, y: Tensor, delta: Tensor) -> list[float]:
        if self.one_sided is not None:
            self.one_sided.reset()  # every descent starts from a fresh G
        return super()._descend(x, y, delta)

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        if self.per_image:
            return per_sample_alignment(self.model, self.params, x_in, y, self.target,
                                        self.loss_fn, self.chunk_size)
        grads = param_gradient(self.model, self.params, x_in, y, self.loss_fn)
        return 1 - flat_dot(self.target, grads) / (self.target_norm * flat_norm(grads)).clamp_min(1e-30)
