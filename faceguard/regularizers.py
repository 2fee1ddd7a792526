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
