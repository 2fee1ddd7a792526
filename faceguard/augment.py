"""Differentiable data augmentation applied to x + Δ at every crafting step (kornia).

Crafting through random flips/translations/rotations makes the perturbation work for the many
augmented views a victim's training loop will see, not only for the exact pixel grid it was crafted
on (the paper's Algorithm 1 augments at every step). ``CraftSettings.augment`` names one of
:data:`faceguard.registry.AUGMENTATIONS`: ``flip-translate`` (a victim's training augmentation, for
dataset poisons) or ``scraper`` (what a photo goes through before a recognizer sees it, for evasion).
"""
from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def crafting_augmentation(
    flip: bool = True,
    translate: float = 0.125,
    degrees: float = 0.0,
    scale: tuple[float, float] | None = None,
) -> nn.Module:
    """A random flip + small affine (translate as a fraction of the side, rotation in degrees).

    Every op is built from ``grid_sample``/indexing, so gradients flow back to Δ. The default
    (flip, ±12.5 % translation) mirrors the crop-with-4-pixel-padding + flip of CIFAR training.
    """
    ops: list[nn.Module] = []
    if flip:
        ops.append(K.RandomHorizontalFlip(p=0.5))
    if translate or degrees or scale:
        ops.append(K.RandomAffine(degrees=degrees, translate=(translate, translate) if translate else None,
                                  scale=scale, padding_mode="reflection", p=1.0))
    if not ops:
        raise ValueError("crafting_augmentation: every op is disabled; use augment=\"none\" instead")
    return nn.Sequential(*ops)


class RandomRescale(nn.Module):
    """Shrink by a random factor in ``scale`` and enlarge back (antialiased bilinear): the detail
    a photo loses when a scraper or a site stores it smaller. Differentiable."""

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), p: float = 0.5) -> None:
        super().__init__()
        self.scale, self.p = scale, p

    def forward(self, x: Tensor) -> Tensor:
        if torch.rand(()) >= self.p:
            return x
        factor = float(torch.empty(()).uniform_(*self.scale))
        size = [max(1, round(side * factor)) for side in x.shape[-2:]]
        small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


class RandomJPEG(nn.Module):
    """kornia's differentiable JPEG at a random quality in ``quality``; gray images go through it as
    RGB and come back as their first channel."""

    def __init__(self, quality: tuple[float, float] = (70.0, 95.0), p: float = 0.5) -> None:
        super().__init__()
        self.jpeg = K.RandomJPEG(jpeg_quality=quality, p=p)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 3:
            return self.jpeg(x)
        return self.jpeg(x.expand(-1, 3, -1, -1))[:, :1]


def scraper_augmentation() -> nn.Module:
    """What happens to a face between its upload and a recognizer: re-detection moves the crop
    (±3°, ±2 % shift, ±5 % scale), the photo is stored smaller (down-up rescale) and re-encoded
    (JPEG quality 70–95), and it is blurred a little. Expectation over these views makes a
    perturbation survive them (EOT)."""
    return nn.Sequential(
        K.RandomAffine(degrees=3.0, translate=(0.02, 0.02), scale=(0.95, 1.05), padding_mode="reflection", p=1.0),
        RandomRescale(),
        K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.5),
        RandomJPEG(),
    )
