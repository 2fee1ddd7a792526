"""ε in pixel levels and its one conversion to the engine's [0, 1] range (no torch imported).

Every public entry point of faceguard (the command line, :class:`faceguard.CraftSettings`, the
crafting methods, :class:`faceguard.Protector`, :func:`faceguard.quantize_within`) takes ε in 0–255
pixel levels: ``eps=16`` means 16/255. :func:`eps_radius` is the only place that divides by 255;
inside the engine that fraction is called the *radius*. A fraction passed as ε (``eps=8/255``)
would round to a bound of 0 levels and protect nothing, so it is refused with an error that says
what to pass.
"""
from __future__ import annotations

import math
import numbers


def check_eps(eps: float) -> float:
    """``eps`` as a float after checking it is a bound in 0–255 pixel levels.

    0 (no perturbation) and any level from 1 to 255 are accepted; a value strictly between 0 and 1
    is refused: it looks like a fraction of the range, and as pixel levels it allows no change.
    """
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or math.isnan(eps):
        raise ValueError(f"eps must be a number of 0-255 pixel levels (e.g. 8), got {eps!r}")
    if not 0 <= eps <= 255:
        raise ValueError(f"eps must be in [0, 255] pixel levels (e.g. 8 for 8/255), got {eps:g}")
    if 0 < eps < 1:
        raise ValueError(f"eps is given in 0-255 pixel levels: {eps:g} looks like a fraction of the range "
                         f"and would allow no change after 8-bit rounding; pass {eps * 255:g} instead")
    return float(eps)


def eps_radius(eps: float) -> float:
    """ε in pixel levels → the radius of the ℓ∞ ball in the engine's [0, 1] pixel range."""
    return check_eps(eps) / 255.0
