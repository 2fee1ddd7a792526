"""Perceptual shaping of Δ inside the ℓ∞ ball: where and in which colours a perturbation may go.

ε stays the hard bound per pixel and channel (``--eps 16`` keeps its meaning); shaping only takes
room away, where people would see the change most:

* **Colour** (``chroma``): Δ per pixel is split into its luminance part L = mean over R, G, B (an
  equal change of the three channels: grey) and its chroma part ρ = Δ − L (what tints the pixel;
  Σρ = 0). ρ is bounded by ``chroma`` x ε (0 = grey changes only, 1 = no colour limit), L by
  what is left, so |L + ρ_c| never exceeds ε. People see saturated, low-frequency colour changes
  on skin at once (the blotches of unshaped evasion). The methods apply it in their projection
  (:meth:`faceguard.attacks.base.Perturbation.project`) and steer their signed steps with
  :func:`shape_gradient`, so every iterate lies in the shaped set.
* **Budget map** (``budget_floor``, ``feather``): a per-pixel fraction m ∈ [0, 1] of ε that
  multiplies the paste mask of a face in the photo (:class:`faceguard.protect.warp.PhotoFaces`), at
  the photo's own resolution, where people look: :func:`texture_budget` is 1 on texture and edges
  (hair, brows, eyes, lips), where contrast masking hides a change, and ``floor`` on flat skin;
  :func:`feather_map`, drawn on the face's crop grid and warped into the photo like Δ, fades the
  change out over the outer ``feather`` of the crop's side, so no edge shows where it ends.

All ops are plain tensor functions (kornia-style) on [B, C, H, W] images in [0, 1].
"""
from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

TEXTURE_WINDOW = 7  # side of the window over which local contrast is taken (photo pixels: about 0.1° at 67 ppd)
TEXTURE_SCALE = 0.08  # local luminance std at which a pixel gets its full budget (about 20 levels: wrinkles,
# skin pores and JPEG blocks stay below it, hair, brows, eyes and lips reach it)


def luminance(x: Tensor) -> Tensor:
    """Mean over the colour channels [B, 1, H, W] (the grey part of a change)."""
    return x.mean(1, keepdim=True)


def texture_budget(x: Tensor, floor: float, window: int = TEXTURE_WINDOW, scale: float = TEXTURE_SCALE) -> Tensor:
    """Per-pixel budget fraction [B, 1, H, W] in [floor, 1]: ``floor`` + (1 − floor) · min(1, s / scale)
    with s the local standard deviation of the clean image's luminance over a ``window``² box,
    dilated by one pixel (a change right beside an edge is masked too). ``floor`` = 1 gives ones."""
    if not 0 <= floor <= 1:
        raise ValueError(f"budget floor must lie in [0, 1], got {floor}")
    grey = luminance(x)
    if floor == 1:
        return torch.ones_like(grey)
    size = (window, window)
    mean = kornia.filters.box_blur(grey, size, border_type="reflect")
    spread = (kornia.filters.box_blur(grey * grey, size, border_type="reflect") - mean * mean).clamp_min(0).sqrt()
    texture = F.max_pool2d(spread, 3, stride=1, padding=1)  # a flat dilation: a change right beside an edge is masked
    return floor + (1 - floor) * (texture / scale).clamp(max=1)


def feather_map(height: int, width: int, fraction: float, device: torch.device | None = None) -> Tensor:
    """[1, 1, H, W] raised-cosine fade from 0 at the border to 1 at ``fraction`` of the side inside
    (ones for ``fraction`` = 0)."""
    if not 0 <= fraction < 0.5:
        raise ValueError(f"feather must lie in [0, 0.5), got {fraction}")

    def ramp(length: int) -> Tensor:
        if fraction == 0:
            return torch.ones(length, device=device)
        position = torch.arange(length, device=device, dtype=torch.float32) + 0.5
        edge = torch.minimum(position, length - position) / (fraction * length)
        return 0.5 - 0.5 * torch.cos(torch.pi * edge.clamp(max=1))

    return (ramp(height)[:, None] * ramp(width)[None, :])[None, None]


def project_shaped(x: Tensor, delta: Tensor, radius: Tensor | float, chroma: float = 1.0) -> Tensor:
    """Δ projected onto the shaped ball: chroma part bounded by ``chroma`` · radius, luminance by
    what is left and by what keeps x + Δ in [0, 1] (a last clamp to [0, 1] remains for a tint
    that alone leaves it). ``radius`` is ε in [0, 1] units, a number or a per-pixel map
    broadcastable to Δ. One colour channel: plain clamp."""
    if not 0 <= chroma <= 1:
        raise ValueError(f"chroma must lie in [0, 1], got {chroma}")
    if delta.shape[1] == 1 or chroma == 1:
        shaped = torch.maximum(torch.minimum(delta, radius + 0 * delta), -radius + 0 * delta)
    else:
        grey = luminance(delta)
        tint = delta - grey
        peak = tint.abs().amax(1, keepdim=True)
        allowed = chroma * radius + 0 * peak
        tint = tint * torch.where(peak > allowed, allowed / peak.clamp_min(1e-12), torch.ones_like(peak))
        room = radius - tint.abs().amax(1, keepdim=True)
        # the grey part also keeps every channel of x + Δ in [0, 1], so the clamp below leaves the
        # tint alone wherever that is possible (it is unless ρ alone leaves [0, 1])
        low = torch.maximum(-room, (-x - tint).amax(1, keepdim=True))
        high = torch.minimum(room, (1 - x - tint).amin(1, keepdim=True))
        shaped = torch.maximum(torch.minimum(grey, high), low) + tint
    return (x + shaped).clamp(0, 1) - x


def shape_gradient(grad: Tensor, chroma: float = 1.0) -> Tensor:
    """The gradient whose sign drives a step inside the shaped set: for ``chroma`` < 1 the chroma
    part is scaled by ``chroma`` (0: every channel steps with the sign of the luminance gradient,
    so a grey Δ stays grey)."""
    if grad.shape[1] == 1 or chroma == 1:
        return grad
    grey = luminance(grad)
    return grey + chroma * (grad - grey)
