"""Dataset-level protection on tensors: build a crafting method by name, craft batch by batch.

Both ``faceguard poison`` (files on disk, :mod:`faceguard.poison_folder`) and the benchmarks (data
in memory) go through :func:`build_attack` and :func:`craft_batch`, so what is measured is what
users run. Outputs are 8-bit images that satisfy the ℓ∞ bound exactly (:func:`quantize_within`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from faceguard.attacks import Alignment, Perturbation, RandomNoise, TensorClog, Unlearnable
from faceguard.backends import DEFAULT_BACKEND
from faceguard.gradients import model_device
from faceguard.losses import LossFn, cross_entropy
from faceguard.quantize import quantize_within

# Method names as they appear on the CLI and in result files.
METHOD_NAMES = ("alignment-joint", "alignment-independent", "random", "tensorclog", "unlearnable")


@dataclass
class CraftSettings:
    """How perturbations are crafted (the paper's defaults: 240 steps, 8 restarts, augmentation).

    ``step_size`` is the initial signed-Adam step as a fraction of ε (decayed 10× at 3/8, 5/8 and
    7/8 of the steps): 0.1 suits the paper's 240 steps; short runs need larger steps to travel
    across the ε-ball at all (30 steps at 0.1 move at most ~1.3 ε in total).
    ``batch_size`` is also the set of images one joint cosine is taken over. ``seed`` seeds batch
    ``k`` with ``seed + k`` so any batch can be redone alone (resume) with the same result.
    """

    steps: int = 240
    restarts: int = 8
    step_size: float = 0.1
    augment: bool = True
    backend: str = DEFAULT_BACKEND
    regularizer: str | None = None
    reg_weight: float = 0.0
    batch_size: int = 128
    seed: int = 0
    loss_fn: LossFn = field(default=cross_entropy, repr=False)


def build_attack(method: str, model: nn.Module, eps: float, settings: CraftSettings,
                 target: Sequence[Tensor] | None = None) -> Perturbation:
    """The crafting method ``method`` (one of :data:`METHOD_NAMES`) at ``eps`` (fraction of 1).

    Alignment variants need the target gradient ``target``; the baselines do not. TensorClog and
    Unlearnable use the same steps/restarts/augmentation as the alignment, so comparisons are fair.
    """
    pgd = dict(eps=eps, steps=settings.steps, restarts=settings.restarts, step_size=settings.step_size,
               augment=settings.augment,
               loss_fn=settings.loss_fn, seed=settings.seed)
    if method.startswith("alignment-"):
        if target is None:
            raise ValueError(f"{method} needs a target gradient")
        return Alignment(model, target, variant=method.removeprefix("alignment-"), backend=settings.backend,
                         regularizer=settings.regularizer, reg_weight=settings.reg_weight, **pgd)
    if method == "random":
        return RandomNoise(model, eps=eps, seed=settings.seed)
    if method == "tensorclog":
        return TensorClog(model, **pgd)
    if method == "unlearnable":
        return Unlearnable(model, **pgd)
    raise ValueError(f"unknown method {method!r}; choose from {METHOD_NAMES}")


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


def craft_tensor_dataset(attack: Perturbation, images: Tensor, labels: Tensor, settings: CraftSettings,
                         progress: bool = True, desc: str = "craft") -> CraftOutcome:
    """Protect a whole uint8 dataset held in memory, batch by batch (benchmarks and small corpora)."""
    start = time.perf_counter()
    out = torch.empty_like(images)
    losses = []
    batches = list(batch_slices(len(images), settings.batch_size))
    for k, part in tqdm(batches, desc=desc, disable=not progress):
        out[part], loss = craft_batch(attack, images[part], labels[part], seed=settings.seed + k)
        losses.append(loss)
    return CraftOutcome(out, losses, time.perf_counter() - start)
