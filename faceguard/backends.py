"""Crafting-gradient backends: how ∇ₓ A (the input gradient of the alignment loss) is computed.

* ``double`` — double backprop: build G = ∇θ L with ``create_graph`` and differentiate A through it.
  The reference; exact; ~1.5 GB extra memory on a CIFAR ResNet-18 batch of 128.
* ``fd`` — a direction derivative instead of a second-order graph. With u = ∇_G A (fixed after one
  ordinary backward), ∇ₓ⟨u, ∇θ L⟩ = d/dh ∇ₓ L(θ + h·u), so a central difference of two ordinary
  input-gradients at θ ± h·u gives ∇ₓ A. The network is piecewise linear, so units that switch
  between θ − hu and θ + hu make this differ from the exact derivative at every h.
* ``fd-frozen`` — the same difference with the activation pattern of θ (ReLU/PReLU/LeakyReLU on/off
  masks and max-pool choices) recorded in the first pass and replayed in the ±h passes, which makes
  it agree with ``double`` to O(h²).
* ``fd-frozen-1s`` — the one-sided version: the backward that computes G also returns ∇ₓ L(θ), so
  a single extra pass at θ + h·u (pattern replayed) gives the difference. Two input-gradient passes
  instead of three, but exact only to O(h): u is concentrated in the last layer, which moves by
  ~1e-3 of its norm at the default step, so the curvature of a margin head shows. Measured against
  ``double`` on random weights: cosine ≥ 0.998 and sign agreement ≥ 0.989 on every registered model
  and head (worst: ArcFace/CosFace cosine 0.998, VGG16 signs 0.989; the central difference: ≥ 0.9999
  and ≥ 0.993).

The step is h = ``rel_step`` · ‖θ‖ / ‖u‖ with ``rel_step`` = 1e-5 by default. Measured on random
weights (float32): at 1e-4 the truncation error through margin heads (CosFace/ArcFace, s = 64,
normalised weights) drops the sign agreement with ``double`` to 0.955; at 1e-6 float32 rounding drops
it to 0.993 on ResNet-18; 1e-5 gave ≥ 0.9993 on every model tried. Parameters are restored
bit-exactly after each difference.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from faceguard.gradients import flat_dot
from faceguard.losses import LossFn

BACKENDS = ("double", "fd-frozen", "fd-frozen-1s", "fd")
# What crafting uses unless told otherwise: the exact gradient at 0.83x double backprop's time per
# step, and victims as damaged as with double or fd at equal steps and equal time (issue #8,
# benchmarks/results/cifar10-cpu-backends.md and speed.md).
DEFAULT_BACKEND = "fd-frozen"

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


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
                    patterns: list[Tensor] | None) -> Tensor:
    """∇ₓ Σ loss at the model's current θ (parameter gradients are not computed)."""
    x = x.detach().requires_grad_(True)
    if patterns is None:
        loss = loss_fn(model, x, y).sum()
    else:
        with ActivationPattern(patterns):
            loss = loss_fn(model, x, y).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def direction_derivative(
    model: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, loss_fn: LossFn,
    direction: Sequence[Tensor], patterns: list[Tensor] | None, rel_step: float = 1e-5,
    base_gradient: Tensor | None = None,
) -> Tensor:
    """∇ₓ⟨u, ∇θ Σ loss(x)⟩ by a central difference of input gradients at θ ± h·u, or by a one-sided
    difference against ``base_gradient`` = ∇ₓ Σ loss at θ when it is given."""
    params, direction = list(params), list(direction)
    originals = [p.detach().clone() for p in params]
    h = rel_step * list_norm(originals) / max(list_norm(direction), 1e-30)
    flags = [p.requires_grad for p in params]
    grads = []
    try:
        for p in params:
            p.requires_grad_(False)
        for sign in (1.0,) if base_gradient is not None else (1.0, -1.0):
            with torch.no_grad():
                torch._foreach_copy_(params, originals)
                torch._foreach_add_(params, direction, alpha=sign * h)
            grads.append(_input_gradient(model, x, y, loss_fn, patterns))
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, originals)
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    if base_gradient is not None:
        return (grads[0] - base_gradient) / h
    return (grads[0] - grads[1]) / (2 * h)


def alignment_input_gradient(
    model: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, loss_fn: LossFn,
    target: Sequence[Tensor], detach_norm: bool, frozen: bool, rel_step: float = 1e-5,
    one_sided: bool = False,
) -> tuple[Tensor, float]:
    """(∇ₓ A, A) for A = 1 − ⟨T, G⟩/(‖T‖‖G‖) without a second-order graph.

    One ordinary backward gives G (and records the activation pattern when ``frozen``); then
    u = ∇_G cos(T, G), i.e. u = T/(‖T‖‖G‖) − ⟨T,G⟩G/(‖T‖‖G‖³) for the joint objective and
    u = T/(‖T‖‖G‖) with the norm detached (independent variant), and ∇ₓ A = −∇ₓ⟨u, G⟩.
    ``one_sided`` takes ∇ₓ L(θ) from that same backward and differences against it (``frozen`` only:
    without the replayed pattern the two gradients would not even be of the same linear map).
    """
    if one_sided and not frozen:
        raise ValueError("a one-sided difference needs the frozen activation pattern")
    x = x.detach().requires_grad_(one_sided)
    recorder = ActivationPattern() if frozen else None
    if recorder is None:
        loss = loss_fn(model, x, y).sum()
    else:
        with recorder:
            loss = loss_fn(model, x, y).sum()
    grads = torch.autograd.grad(loss, [*params, x] if one_sided else list(params))
    base_gradient = grads[-1] if one_sided else None
    grads = list(grads[:len(params)])
    target = list(target)
    t_norm, g_norm = list_norm(target), max(list_norm(grads), 1e-30)
    dot = float(flat_dot(target, grads))
    if detach_norm:
        # differentiate along T/‖T‖ and scale by 1/‖G‖ afterwards: the step h then does not depend
        # on the batch, so each image's gradient stays independent of the others (Proposition 1)
        direction, scale = torch._foreach_div(target, t_norm), 1 / g_norm
    else:
        direction = torch._foreach_add(torch._foreach_div(target, t_norm * g_norm), grads,
                                       alpha=-dot / (t_norm * g_norm ** 3))
        scale = 1.0
    derivative = direction_derivative(model, params, x, y, loss_fn, direction,
                                      recorder.patterns if recorder else None, rel_step, base_gradient) * scale
    return -derivative, 1 - dot / (t_norm * g_norm)
