"""Shared machinery of every crafting method, torchattacks-style: ``x_adv = atk(x, y)``.

A method is built from a model, a :class:`~faceguard.settings.CraftSettings` (or keyword changes
of the defaults, ``Alignment(model, T, eps=8, steps=30)``; ε in 0–255 pixel levels) and what the
method alone needs (the alignment's target gradient; optionally a ``loss_fn`` for models called
another way, the crafting ``params``, a ``preprocess``).

:class:`Perturbation` handles what all methods share: moving data to the surrogate's device, running
the surrogate in eval mode, seeding, and projecting onto the ε-ball ∩ [0, 1]. :class:`PGDAttack` adds
the paper's optimiser: R restarts of M signed-Adam steps with optional differentiable augmentation
and a visibility regulariser, keeping the restart with the lowest loss (per batch or per image).

``preprocess(x_in, y)``: an optional differentiable map that does not depend on θ (e.g. the photo
warp of :mod:`faceguard.protect.warp`) from x + Δ to what the model reads; the augmentation is
drawn on its output (for a photo: on the pixels a scraper gets, as re-detection, rescaling and
re-encoding happen there).
Its Jacobian is applied once per step, while a crafting backend may pass through the surrogate
several times per step (the ±h passes of ``fd-frozen``), each time without the map.

Why eval mode: in train mode BatchNorm normalises with the statistics of the current batch, so each
image's gradient would depend on the other images in the batch (breaking the independent variant),
crafting would differentiate another function than the one the target gradient T was taken on, and
every forward pass would overwrite the surrogate's running statistics. In eval mode F(·; θ) is one
fixed, deterministic function and the surrogate is left untouched.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from faceguard.gradients import model_device, trainable_params
from faceguard.losses import LossFn
from faceguard.registry import AUGMENTATIONS, NO_AUGMENTATION, NO_REGULARIZER, OBJECTIVES, REGULARIZERS
from faceguard.settings import CraftSettings
from faceguard.shaping import project_shaped, shape_gradient
from faceguard.units import eps_radius

Preprocess = Callable[[Tensor, Tensor], Tensor]


@dataclass
class CraftReport:
    """What the last call did: loss of each restart, the kept loss, per-step objective values.

    Losses are 0-d tensors for batch-level methods and [B] tensors for per-image ones.
    """

    restart_losses: list[Tensor] = field(default_factory=list)
    best_loss: Tensor | None = None
    step_losses: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0


class Perturbation:
    """Base of all methods: ``x_adv = method(x, y)`` with ``‖x_adv − x‖∞ ≤ ε`` and x_adv ∈ [0, 1].

    ``self.eps`` is the bound in pixel levels (as given), ``self.radius`` the same bound in the
    [0, 1] range the images are in. With ``chroma`` < 1 the projection also bounds Δ's colour
    part (:func:`faceguard.shaping.project_shaped`).
    """

    name = ""  # the method's name in faceguard.registry.METHODS
    needs_target = False  # whether the constructor takes a target gradient after the model
    optimises = False  # whether it optimises an objective (takes loss_fn / params / preprocess)
    data_free = False  # whether Δ depends on neither the model's weights nor the images' content
    takes_classes = False  # whether the constructor takes ``classes`` (the class count; else the model's width)

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, **changes: object) -> None:
        self.settings = (settings or CraftSettings()).replace(method=self.name, **changes)
        self.model = model
        self.eps = self.settings.eps
        self.radius = eps_radius(self.eps)
        self.seed = self.settings.seed
        self.report = CraftReport()

    def __call__(self, x: Tensor, y: Tensor, seed: int | None = None) -> Tensor:
        """Perturb a batch of [0, 1] images; same seed and inputs → identical output."""
        device = model_device(self.model)
        x0, y0 = x.detach().to(device), y.to(device)
        was_training = self.model.training
        self.model.eval()
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(self.seed if seed is None else seed)
                delta = self.perturb(x0, y0)
        finally:
            self.model.train(was_training)
        self.report.seconds = time.perf_counter() - start
        return (x0 + delta).clamp(0, 1).detach().to(x.device)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """Return Δ for the batch (already projected). Implemented by each method."""
        raise NotImplementedError

    def output_width(self, model_input: Tensor) -> int:
        """The model's output width on the first input: the class count of a method that takes
        ``classes`` (:attr:`takes_classes`) and was not given it."""
        with torch.no_grad():
            return int(self.model(model_input[:1]).shape[-1])

    def random_delta(self, x: Tensor) -> Tensor:
        """Uniform random start in the ε-ball, projected to keep x + Δ in [0, 1]."""
        delta = (torch.rand_like(x) * 2 - 1) * self.radius
        return self.project(x, delta)

    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        """Project Δ onto {‖Δ‖∞ ≤ ε} ∩ {x + Δ ∈ [0, 1]} (in place; Δ itself stays signed), and
        onto the colour-bounded set for ``chroma`` < 1 (:func:`faceguard.shaping.project_shaped`)."""
        with torch.no_grad():
            if self.settings.chroma < 1:
                delta.copy_(project_shaped(x, delta, self.radius, self.settings.chroma))
                return delta
            delta.clamp_(-self.radius, self.radius)
            delta.copy_((x + delta).clamp_(0, 1) - x)
        return delta


class PGDAttack(Perturbation):
    """Signed-Adam PGD with restarts; subclasses define :meth:`objective` and :meth:`evaluate`.

    ``per_image`` selects the best restart separately for every image (methods whose images are
    independent) instead of once for the batch.
    """

    per_image = False
    optimises = True

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, *, loss_fn: LossFn | None = None,
                 params: list[Tensor] | None = None, preprocess: Preprocess | None = None, **changes: object) -> None:
        super().__init__(model, settings, **changes)
        settings = self.settings
        self.steps, self.restarts, self.step_size = settings.steps, settings.restarts, settings.step_size
        self.augment = None if settings.augment == NO_AUGMENTATION else AUGMENTATIONS.get(settings.augment)()
        self.regularizer = None if settings.regularizer == NO_REGULARIZER else REGULARIZERS.get(settings.regularizer)
        self.reg_weight = settings.reg_weight
        self.loss_fn = loss_fn if loss_fn is not None else OBJECTIVES.get(settings.objective)
        self.params = list(params) if params is not None else trainable_params(model)
        self.preprocess = preprocess

    def model_input(self, x_in: Tensor, y: Tensor) -> Tensor:
        """What ``loss_fn`` reads: ``preprocess(x_in, y)``, or ``x_in`` itself without a preprocess."""
        return x_in if self.preprocess is None else self.preprocess(x_in, y)

    def objective(self, x_in: Tensor, y: Tensor) -> Tensor:
        """Scalar whose gradient w.r.t. the input drives the signed step (x_in may be augmented)."""
        raise NotImplementedError

    def objective_gradient(self, x_in: Tensor, y: Tensor) -> tuple[Tensor, float]:
        """(∇ of :meth:`objective` w.r.t. x_in, objective value); by autograd unless overridden."""
        objective = self.objective(x_in, y)
        (grad,) = torch.autograd.grad(objective, x_in)
        return grad, float(objective.detach())

    def step_gradient(self, x: Tensor, y: Tensor, delta: Tensor) -> tuple[Tensor, float]:
        """∇Δ of objective + regulariser at Δ (fresh augmentation draw) and the objective value."""
        x_in = self.model_input(x + delta, y)
        if self.augment is not None:
            x_in = self.augment(x_in)
        grad_in, objective = self.objective_gradient(x_in, y)
        (grad,) = torch.autograd.grad(x_in, delta, grad_in)
        if self.regularized:
            penalty = self._reduce_penalty(self._penalty(x, delta)).sum()
            grad = grad + torch.autograd.grad(penalty, delta)[0]
        return grad, objective

    def evaluate(self, x_in: Tensor, y: Tensor) -> Tensor:
        """Loss of a model input (perturbed batch, preprocessed, not augmented): 0-d (batch) or [B]
        (``per_image``)."""
        raise NotImplementedError

    def loss(self, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        """Selection loss (objective + regulariser) of any perturbed batch, e.g. a random start."""
        device = model_device(self.model)
        x, y = x.detach().to(device), y.to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            return self._selection_loss(x, y, x_adv.detach().to(device) - x).detach()
        finally:
            self.model.train(was_training)

    @property
    def regularized(self) -> bool:
        """Whether a visibility regulariser with a non-zero weight is part of the objective."""
        return self.regularizer is not None and self.reg_weight != 0

    def _penalty(self, x: Tensor, delta: Tensor) -> Tensor:
        """Weighted regulariser per image ([B]); zeros when there is none."""
        if not self.regularized:
            return torch.zeros(x.shape[0], device=x.device)
        return self.reg_weight * self.regularizer(x, delta)

    def _reduce_penalty(self, penalty: Tensor) -> Tensor:
        """Per-image methods add each image's own penalty; batch methods the batch mean."""
        return penalty if self.per_image else penalty.mean()

    def _selection_loss(self, x: Tensor, y: Tensor, delta: Tensor) -> Tensor:
        return self.evaluate(self.model_input(x + delta, y), y) + self._reduce_penalty(self._penalty(x, delta).detach())

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        self.report = CraftReport()
        best_delta, best_loss = None, None
        for _ in range(self.restarts):
            delta = self.random_delta(x)
            self.report.step_losses.append(self._descend(x, y, delta))
            loss = self._selection_loss(x, y, delta).detach()
            self.report.restart_losses.append(loss)
            if best_delta is None:
                best_delta, best_loss = delta.detach().clone(), loss.clone()
            elif self.per_image:
                better = loss < best_loss
                best_delta[better] = delta.detach()[better]
                best_loss = torch.where(better, loss, best_loss)
            elif loss < best_loss:
                best_delta, best_loss = delta.detach().clone(), loss.clone()
        self.report.best_loss = best_loss
        return best_delta

    def _descend(self, x: Tensor, y: Tensor, delta: Tensor) -> list[float]:
        """M signed-Adam steps on Δ (in place), projecting after each; returns the objective trace."""
        delta.requires_grad_(True)
        optimizer = torch.optim.Adam([delta], lr=self.step_size * self.radius)
        milestones = sorted({max(1, int(f * self.steps)) for f in self.settings.decay_at})
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
        trace = []
        for _ in range(self.steps):
            grad, objective = self.step_gradient(x, y, delta)
            delta.grad = shape_gradient(grad, self.settings.chroma).sign()
            optimizer.step()
            schedule.step()
            self.project(x, delta)
            trace.append(objective)
        delta.requires_grad_(False)
        return trace
