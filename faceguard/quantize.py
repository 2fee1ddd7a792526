"""ε in pixel units and 8-bit quantisation that keeps the ℓ∞ bound exact.

The CLI takes ε in 0–255 units (``--eps 16`` means 16/255); the engine works in [0, 1]. Saving a
protected image rounds to 8 bits; rounding alone can push a pixel one level past the bound when the
clean image is not on the 8-bit grid, so :func:`quantize_within` clamps to the bound after rounding.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def eps_from_pixels(eps: float) -> float:
    """ε in 0–255 pixel units → fraction of the pixel range used internally."""
    if not 0 <= eps <= 255:
        raise ValueError(f"eps must be in [0, 255] pixel units, got {eps}")
    return eps / 255.0


def to_uint8(x: Tensor) -> Tensor:
    """[0, 1] float image → uint8 by rounding to the nearest level."""
    return (x.detach() * 255).round().clamp(0, 255).to(torch.uint8)


def quantize_within(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Round ``x_adv`` to uint8 such that ``|result − to_uint8(x)| ≤ floor(255·eps)`` holds exactly."""
    limit = math.floor(eps * 255 + 1e-6)
    ref = to_uint8(x).to(torch.int16)
    q = to_uint8(x_adv).to(torch.int16)
    return torch.minimum(torch.maximum(q, ref - limit), ref + limit).clamp(0, 255).to(torch.uint8)
