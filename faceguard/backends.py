"""Crafting-gradient backends: how ∇ₓ A (the input gradient of the alignment loss) is computed.

Each backend is registered by name in :data:`faceguard.registry.BACKENDS` as a callable
``backend(problem) -> AlignmentGradient``; the result is called as ``grad, A = gradient(x, y)``.

* ``double`` — double backprop: build G = ∇θ L with ``create_graph`` and differentiate A through it.
  The reference; exact; the most memory (a second-order graph).
* ``fd`` — a direction derivative instead of a second-order graph. With u = ∇_G A (fixed after one
  ordinary backward), ∇ₓ⟨u, ∇θ L⟩ = d/dh ∇ₓ L(θ + h·u), so a central difference of two ordinary
  input-gradients at θ ± h·u gives ∇ₓ A. The network is piecewise linear, so units that switch
  between θ − hu and θ + hu make this differ from the exact derivative at every h.
* ``fd-frozen`` — the same difference with the activation pattern of θ (ReLU/PReLU/LeakyReLU on/off
  masks and max-pool choices) recorded in the first pass and replayed in the ±h passes, which makes
  it agree with ``double`` to O(h²).
* ``fd-frozen-1s`` — the one-sided version: the backward that computes G also returns ∇ₓ L(θ), so
  a single extra pass at θ + h·u (pattern replayed) gives the difference: two input-gradient passes
  instead of three, exact only to O(h).
* ``fd-frozen-lag`` — ``fd-frozen-1s`` with G (and so u) recomputed only every ``fd_refresh`` steps:
  the pass at θ skips its weight-gradient half in between. Not the exact gradient of A between
  refreshes (:class:`OneSidedAlignmentGradient`).

The step is h = ``rel_step`` · ‖θ‖ / ‖u‖ (``CraftSettings.fd_step``): larger steps show the
curvature of margin heads, smaller ones float32 rounding. Parameters are restored bit-exactly after
each difference. How the backends compare in accuracy, speed, memory and protection, and why the
defaults are what they are: docs/methods.md.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from faceguard.gradients import flat_dot, flat_norm
from faceguard.losses import LossFn

_RELU = {F.relu, torch.relu}
_PRELU = {F.prelu, torch.prelu}
_LEAKY = {F.leaky_relu}
_MAXPOOL = {F.max_pool2d, torch.max_pool2d}


class ActivationPattern(TorchFunctionMode):
    """Records, or replays, which units are on and which inputs max-pools pick.

    Use one instance to record (``patterns=None``) during a forward pass, then new instances with
    the recorded ``patterns`` to replay it: replayed ReLUs multiply by the recorded mask, so the
    network becomes the linear map it was at the recording point. Works for module and functional
    calls alike because it intercepts the torch functions themselves.
    """

    def __init__(self, patterns: list[Tensor] | None = None) -> None:
        super().__init__()
        self.recording = patterns is None
        self.patterns: list[Tensor] = [] if patterns is None else patterns
        self.position = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MAXPOOL:
            return self._max_pool(func, args, kwargs)
        if not (func in _RELU or func in _PRELU or func in _LEAKY):
            return func(*args, **kwargs)
        x = args[0]
        if self.recording:
            self.patterns.append(x.detach() > 0)
            return func(*args, **kwargs)
        mask = self._next()
        if func in _RELU:
            return x * mask
        if func in _PRELU:
            slope = args[1] if len(args) > 1 else kwargs["weight"]
            slope = slope.view(1, -1, *([1] * (x.dim() - 2))) if slope.numel() > 1 else slope
        else:
            slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
        return torch.where(mask, x, slope * x)

    def _max_pool(self, func, args, kwargs):
        if kwargs.get("return_indices") or len(args) > 6:
            raise NotImplementedError("max-pool with return_indices is not supported by fd-frozen")
        x = args[0]
        if self.recording:
            out, indices = F.max_pool2d(*args, **{**kwargs, "return_indices": True})
            self.patterns.append(indices)
            return out
        indices = self._next()
        return x.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)

    def _next(self) -> Tensor:
        pattern = self.patterns[self.position]
        self.position += 1
        return pattern


def list_norm(tensors: list[Tensor]) -> float:
    """‖tensors‖₂ over a list of tensors, without autograd, in one foreach kernel (a Python loop
    over the ~100 parameter tensors of a network costs milliseconds per call at small inputs)."""
    with torch.no_grad():
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))))


class _Displacement:
    """Moves the parameters to θ + a·u for one pass and puts θ back bit-exactly afterwards.

    Moved parameters do not require a gradient, so a pass's backward computes the input gradient
    only (no weight-gradient half).
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.originals = [p.detach().clone() for p in self.params]
        self.flags = [p.requires_grad for p in self.params]

    def move(self, direction: list[Tensor], amount: float) -> None:
        """θ ← θ₀ + amount·u, for an input-gradient-only pass."""
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.originals)
            torch._foreach_add_(self.params, direction, alpha=amount)
        self.need_weight_gradients(False)

    def need_weight_gradients(self, flag: bool) -> None:
        """Whether the next pass's backward also computes ∇θ (at the current θ)."""
        for p in self.params:
            p.requires_grad_(flag)

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.originals)
        for p, flag in zip(self.params, self.flags):
            p.requires_grad_(flag)


def _gradients(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, pattern: ActivationPattern | None,
               params: Sequence[Tensor] = ()) -> tuple[Tensor, list[Tensor], float]:
    """(∇ₓ Σ loss, ∇_params Σ loss, Σ loss) at the model's current θ, recording or replaying ``pattern``."""
    x = x.detach().requires_grad_(True)
    with pattern if pattern is not None else nullcontext():
        loss = loss_fn(model, x, y).sum()
    grads = torch.autograd.grad(loss, [x, *params])
    return grads[0], list(grads[1:]), float(loss.detach())


def _step_size(params: Sequence[Tensor], direction: Sequence[Tensor], rel_step: float) -> float:
    """h = rel_step · ‖θ‖ / ‖u‖."""
    return rel_step * list_norm(list(params)) / max(list_norm(list(direction)), 1e-30)


def direction_derivative(
    model: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, loss_fn: LossFn,
    direction: Sequence[Tensor], patterns: list[Tensor] | None, rel_step: float = 1e-5,
) -> Tensor:
    """∇ₓ⟨u, ∇θ Σ loss(x)⟩ by a central difference of input gradients at θ ± h·u (the one-sided
    difference is :class:`OneSidedAlignmentGradient`)."""
    direction = list(direction)
    h = _step_size(params, direction, rel_step)
    moved, grads = _Displacement(params), []
    try:
        for sign in (1.0, -1.0):
            moved.move(direction, sign * h)
            pattern = None if patterns is None else ActivationPattern(patterns)
            grads.append(_gradients(model, x, y, loss_fn, pattern)[0])
    finally:
        moved.restore()
    return (grads[0] - grads[1]) / (2 * h)


def _alignment_direction(target: list[Tensor], grads: list[Tensor], detach_norm: bool,
                         ) -> tuple[list[Tensor], float, float]:
    """(direction u, scale, A): ∇_G A = −scale·u at G, and A = 1 − cos(T, G).

    Joint: u = T/(‖T‖‖G‖) − ⟨T,G⟩G/(‖T‖‖G‖³), scale 1. Independent (norm detached): u = T/‖T‖ and
    scale 1/‖G‖, so that the step h does not depend on the batch and each image's gradient stays
    independent of the others (Proposition 1).
    """
    t_norm, g_norm = list_norm(target), max(list_norm(grads), 1e-30)
    dot = float(flat_dot(target, grads))
    if detach_norm:
        return torch._foreach_div(target, t_norm), 1 / g_norm, 1 - dot / (t_norm * g_norm)
    direction = torch._foreach_add(torch._foreach_div(target, t_norm * g_norm), grads,
                                   alpha=-dot / (t_norm * g_norm ** 3))
    return direction, 1.0, 1 - dot / (t_norm * g_norm)


@dataclass
class AlignmentProblem:
    """What a backend differentiates: A = 1 − ⟨T, G⟩/(‖T‖‖G‖) with G = ∇θ Σ loss_fn(model, x, y)
    over ``params``; ``detach_norm`` detaches ‖G‖ (the independent variant)."""

    model: nn.Module
    params: list[Tensor]
    loss_fn: LossFn
    target: list[Tensor]
    detach_norm: bool
    rel_step: float = 1e-5
    refresh: int = 2


class AlignmentGradient:
    """A backend's gradient: ``grad, A = gradient(x, y)``; :meth:`reset` before each descent."""

    def __init__(self, problem: AlignmentProblem) -> None:
        self.problem = problem

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget state carried between steps (none unless a backend keeps some)."""


def alignment_objective(problem: AlignmentProblem, x: Tensor, y: Tensor, create_graph: bool = True) -> Tensor:
    """A(x) as a 0-d tensor; with ``create_graph`` it stays differentiable w.r.t. x (double backprop)."""
    loss = problem.loss_fn(problem.model, x, y).sum()
    grads = torch.autograd.grad(loss, problem.params, create_graph=create_graph)
    grad_norm = flat_norm(grads)
    if problem.detach_norm:
        grad_norm = grad_norm.detach()
    return 1 - flat_dot(problem.target, grads) / (flat_norm(problem.target) * grad_norm).clamp_min(1e-30)


class DoubleBackprop(AlignmentGradient):
    """``double``: ∇ₓ A by autograd through the second-order graph of G (exact)."""

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        value = alignment_objective(self.problem, x, y)
        (grad,) = torch.autograd.grad(value, x)
        return grad, float(value.detach())


class CentralDifference(AlignmentGradient):
    """``fd`` and ``fd-frozen`` (``frozen``): (∇ₓ A, A) by a central difference.

    One ordinary backward gives G (and records the activation pattern when ``frozen``); then
    u = ∇_G cos(T, G), i.e. u = T/(‖T‖‖G‖) − ⟨T,G⟩G/(‖T‖‖G‖³) for the joint objective and
    u = T/(‖T‖‖G‖) with the norm detached (independent variant), and ∇ₓ A = −∇ₓ⟨u, G⟩.
    """

    def __init__(self, problem: AlignmentProblem, frozen: bool) -> None:
        super().__init__(problem)
        self.frozen = frozen

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
        p = self.problem
        recorder = ActivationPattern() if self.frozen else None
        with recorder if recorder is not None else nullcontext():
            loss = p.loss_fn(p.model, x.detach(), y).sum()
        grads = list(torch.autograd.grad(loss, p.params))
        direction, scale, value = _alignment_direction(p.target, grads, p.detach_norm)
        derivative = direction_derivative(p.model, p.params, x, y, p.loss_fn, direction,
                                          recorder.patterns if recorder else None, p.rel_step)
        return -derivative * scale, value


def central_difference(problem: AlignmentProblem) -> CentralDifference:
    """The ``fd`` backend."""
    return CentralDifference(problem, frozen=False)


def frozen_central_difference(problem: AlignmentProblem) -> CentralDifference:
    """The ``fd-frozen`` backend."""
    return CentralDifference(problem, frozen=True)


class OneSidedAlignmentGradient(AlignmentGradient):
    """``fd-frozen-1s`` (``refresh`` = 1) and ``fd-frozen-lag``: (∇ₓ A, A) by a one-sided difference.

    Each step, a pass at θ records the activation pattern and gives ∇ₓ L(θ), and a pass at θ + h·u
    replays the pattern: ∇ₓ⟨u, G⟩ ≈ (∇ₓ L(θ + h·u) − ∇ₓ L(θ))/h, exact to O(h). The direction u needs
    G = ∇θ L, and computing G (the weight-gradient half of a backward) is the costly part, so the
    pass at θ computes G only every ``refresh``-th step (the first of each descent included), and
    the steps in between build u from the last G. Per step: 2 + 1/(2·refresh) passes' worth of work
    when a forward, an input backward and a weight backward cost about the same.

    Between refreshes it is not the exact gradient of A: consecutive steps' G already differ (fresh
    augmentation, moved Δ), so u from an older G is an approximation (measured in docs/methods.md).
    Recording the pattern at θ + h·u instead, for a central difference, was tried and dropped:
    max-pool choices that flip there made the gradient unreliable on VGG, GoogLeNet, MobileNetV2.

    A is exact on refresh steps; in between it is estimated to first order from the two losses,
    A ≈ A(G₀) − scale·(⟨u, G⟩ − ⟨u, G₀⟩) with ⟨u, G⟩ ≈ (L(θ + h·u) − L(θ))/h.
    """

    def __init__(self, problem: AlignmentProblem, refresh: int) -> None:
        if refresh < 1:
            raise ValueError(f"refresh must be at least 1 step, got {refresh}")
        super().__init__(problem)
        self.refresh = refresh
        self.reset()

    def reset(self) -> None:
        """Forget G (a G from another descent's Δ is not a few steps old)."""
        self._steps = 0

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
        p = self.problem
        refresh = self._steps % self.refresh == 0
        self._steps += 1
        recorder, moved = ActivationPattern(), _Displacement(p.params)
        try:
            moved.need_weight_gradients(refresh)  # at θ; G only on refresh steps
            base, grads, loss = _gradients(p.model, x, y, p.loss_fn, recorder, p.params if refresh else ())
            if refresh:
                self._direction, self._scale, self._value = _alignment_direction(p.target, grads, p.detach_norm)
                self._along = float(flat_dot(self._direction, grads))
                self._h = _step_size(p.params, self._direction, p.rel_step)
            h = self._h
            moved.move(self._direction, h)
            shifted, _, loss_shifted = _gradients(p.model, x, y, p.loss_fn, ActivationPattern(recorder.patterns))
        finally:
            moved.restore()
        value = self._value if refresh else \
            self._value - self._scale * ((loss_shifted - loss) / h - self._along)
        return (base - shifted) * (self._scale / h), value


def one_sided_difference(problem: AlignmentProblem) -> OneSidedAlignmentGradient:
    """The ``fd-frozen-1s`` backend: G recomputed at every step."""
    return OneSidedAlignmentGradient(problem, refresh=1)


def lagged_one_sided_difference(problem: AlignmentProblem) -> OneSidedAlignmentGradient:
    """The ``fd-frozen-lag`` backend: G recomputed every ``problem.refresh`` steps."""
    return OneSidedAlignmentGradient(problem, refresh=problem.refresh)
