"""8-bit quantisation that keeps the ℓ∞ bound exact (ε in pixel levels, :mod:`faceguard.units`).

Saving a protected image rounds to 8 bits; rounding alone can push a pixel one level past the bound
when the clean image is not on the 8-bit grid, so :func:`quantize_within` clamps to the bound after
rounding.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from faceguard.units import check_eps


def to_uint8(x: Tensor) -> Tensor:
    """[0, 1] float image → uint8 by rounding to the nearest level."""
    return (x.detach() * 255).round().clamp(0, 255).to(torch.uint8)


def quantize_within(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Round ``x_adv`` to uint8 such that ``|result − to_uint8(x)| ≤ floor(eps)`` holds exactly
    (``eps`` in pixel levels)."""
    limit = math.floor(check_eps(eps) + 1e-6)
    ref = to_uint8(x).to(torch.int16)
    q = to_uint8(x_adv).to(torch.int16)
    return torch.minimum(torch.maximum(q, ref - limit), ref + limit).clamp(0, 255).to(torch.uint8)
