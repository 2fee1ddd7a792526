"""Dataset-level protection on tensors: craft a uint8 data set batch by batch.

Both ``faceguard poison`` (files on disk, :mod:`faceguard.poison.folder`) and the benchmarks (data
in memory) build their method with :func:`faceguard.attacks.build_attack` from one
:class:`~faceguard.settings.CraftSettings` and go through :func:`craft_batch`, so what is measured
is what users run. Outputs are 8-bit images that satisfy the ℓ∞ bound exactly
(:func:`quantize_within`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from faceguard.attacks import Perturbation
from faceguard.gradients import model_device
from faceguard.quantize import quantize_within


def craft_batch(attack: Perturbation, images: Tensor, labels: Tensor, seed: int) -> tuple[Tensor, float]:
    """Protect one batch of uint8 images [B, C, H, W]; returns (uint8 images within ε, kept loss).

    The loss is the mean kept objective of the batch (NaN for methods without one, e.g. random).
    """
    x = images.to(model_device(attack.model)).float().div_(255)
    x_adv = attack(x, labels, seed=seed)
    best = attack.report.best_loss
    loss = float(best.float().mean()) if best is not None else float("nan")
    return quantize_within(x_adv, x, attack.eps).cpu(), loss


@dataclass
class CraftOutcome:
    """Protected images (uint8, same order as the input) and the mean kept loss per batch."""

    images: Tensor
    batch_losses: list[float]
    seconds: float


def batch_slices(n: int, batch_size: int) -> Iterator[tuple[int, slice]]:
    """(batch number, slice) pairs covering ``range(n)`` in order."""
    for k, start in enumerate(range(0, n, batch_size)):
        yield k, slice(start, min(start + batch_size, n))


def craft_tensor_dataset(attack: Perturbation, images: Tensor, labels: Tensor, progress: bool = True,
                         desc: str = "craft") -> CraftOutcome:
    """Protect a whole uint8 dataset held in memory in batches of ``attack.settings.batch_size``,
    batch k seeded with ``settings.seed + k`` (benchmarks and small corpora). A method that needs
    the whole corpus at once (``attack.corpus``, e.g. error-minimizing noise) gets it in one call,
    seeded with ``settings.seed``."""
    settings = attack.settings
    start = time.perf_counter()
    out = torch.empty_like(images)
    losses = []
    whole = getattr(attack, "corpus", False)
    batches = [(0, slice(0, len(images)))] if whole else list(batch_slices(len(images), settings.batch_size))
    for k, part in tqdm(batches, desc=desc, disable=not progress):
        out[part], loss = craft_batch(attack, images[part], labels[part], seed=settings.seed + k)
        losses.append(loss)
    return CraftOutcome(out, losses, time.perf_counter() - start)
