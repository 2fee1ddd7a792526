"""Visibility regularisers added to the crafting objective (the paper's Table 9).

Each takes the clean batch x and the perturbation Δ and returns one penalty per image ([B]), so it
works for both the joint (batch) and the independent (per-image) objectives. SSIM and TV come from
kornia; all are differentiable in Δ. They are registered by name in
:data:`faceguard.registry.REGULARIZERS`.
"""
from __future__ import annotations

from typing import Callable

import kornia
from torch import Tensor

Regularizer = Callable[[Tensor, Tensor], Tensor]


def l2_penalty(x: Tensor, delta: Tensor) -> Tensor:
    """Mean squared perturbation per image."""
    return delta.flatten(1).pow(2).mean(1)


def tv_penalty(x: Tensor, delta: Tensor) -> Tensor:
    """Total variation of Δ per image, divided by the number of pixels (size-independent)."""
    per_channel = kornia.losses.total_variation(delta, reduction="sum")  # [B, C]
    return per_channel.flatten(1).sum(1) / delta[0].numel()


def ssim_penalty(x: Tensor, delta: Tensor, window_size: int = 7) -> Tensor:
    """1 − SSIM(x, x + Δ) per image (0 for an invisible perturbation)."""
    window = min(window_size, x.shape[-1], x.shape[-2]) | 1
    ssim_map = kornia.metrics.ssim(x, (x + delta).clamp(0, 1), window_size=window)
    return 1 - ssim_map.flatten(1).mean(1)


LAB_SCALE = 100.0  # ΔE76 per pixel divided by this (L* spans 0-100), so weights compare with 1 − SSIM


def lab_penalty(x: Tensor, delta: Tensor) -> Tensor:
    """Mean CIELAB colour difference ΔE76 per pixel between x and x + Δ, over :data:`LAB_SCALE`: a
    term that sees colour, unlike a per-channel SSIM, and weighs a tint on skin as people do (one
    channel: the L* difference alone)."""
    after = (x + delta).clamp(0, 1)
    if x.shape[1] == 1:
        lightness = [kornia.color.rgb_to_lab(image.expand(-1, 3, -1, -1))[:, :1] for image in (x, after)]
        difference = lightness[1] - lightness[0]
    else:
        difference = kornia.color.rgb_to_lab(after) - kornia.color.rgb_to_lab(x)
    distance = (difference.pow(2).sum(1) + 1e-8).sqrt()  # the small constant keeps the gradient finite at Δ = 0
    return distance.flatten(1).mean(1) / LAB_SCALE
