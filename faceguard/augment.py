"""Differentiable data augmentation applied to x + Δ at every crafting step (kornia).

Crafting through random flips/translations/rotations makes the perturbation work for the many
augmented views a victim's training loop will see, not only for the exact pixel grid it was crafted
on (the paper's Algorithm 1 augments at every step). ``CraftSettings.augment`` switches it on.
"""
from __future__ import annotations

import kornia.augmentation as K
from torch import nn


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
        raise ValueError("crafting_augmentation: every op is disabled; pass augment=None instead")
    return nn.Sequential(*ops)
