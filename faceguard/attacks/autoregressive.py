"""Autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022): a data-free availability poison.

Every class gets its own 2-D autoregressive (AR) process: a 3x3 causal window of coefficients per
channel, whose last entry (the current pixel) is 0 and whose other eight sum to 1. A perturbation of
class k starts from Gaussian noise in its first two rows and columns and fills every other pixel,
in raster order, with the window's weighted sum of the pixels already written. The result is a
smooth-looking noise field that one 3x3 convolution (the process's coefficients with −1 in the
centre) maps exactly to zero, while other classes' processes answer it strongly. A network trained
on images carrying it finds that linearly separable shortcut to the label first and learns little
else. No surrogate and no data are needed: the processes are drawn from ``settings.seed`` alone, so
batches, photos and runs with the same seed and class count share them.

:func:`ar_generate` fills a batch of signals, :func:`ar_response` measures how strongly a process's
filter answers a signal, :func:`find_processes` draws stable candidates and keeps the most mutually
distinguishable ones, and :class:`Autoregressive` (``autoregressive``) is the crafting method: each
image gets a fresh signal of its class's process, scaled to ‖Δ‖∞ = ε (the paper's ℓ∞ variant).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceguard.attacks.base import Perturbation
from faceguard.settings import CraftSettings

WINDOW = 3
CROP = 4  # margin dropped from every generated signal: the random start (2) and its first echoes
STABLE_RMS = 1.0  # a stable process never outgrows the unit Gaussian noise it starts from
POOL = 256  # single-channel candidates drawn per round of the search


def ar_generate(coefficients: Tensor, start: Tensor) -> Tensor:
    """Fill ``start`` [N, C, H, W] (only its first two rows and columns are read) with the AR
    processes ``coefficients`` [N, C, 3, 3] (entry [2, 2] ignored) in raster order; returns the
    filled signal without its :data:`CROP` margin, [N, C, H − 4, W − 4], in float64.

    A pixel reads only pixels above it or to its left, all on earlier anti-diagonals (i + j
    smaller), so each anti-diagonal is filled at once: H + W steps instead of H · W.
    """
    n, c, h, w = start.shape
    b = coefficients.reshape(n * c, WINDOW * WINDOW).double().T.contiguous()
    signal = start.reshape(n * c, h * w).double().T.contiguous()  # pixel-major: a diagonal is a few rows
    window = [(di, dj) for di in range(WINDOW) for dj in range(WINDOW)][:-1]
    for d in range(4, h + w - 1):
        rows = torch.arange(max(2, d - w + 1), min(h - 1, d - 2) + 1)
        index = rows * w + (d - rows)
        signal[index] = sum(b[k] * signal[index + (di - 2) * w + (dj - 2)] for k, (di, dj) in enumerate(window))
    return signal.T.reshape(n, c, h, w)[:, :, CROP:, CROP:]


def matching_filter(coefficients: Tensor) -> Tensor:
    """The 3x3 filter [C, 3, 3] whose response to its own process is zero: the coefficients with −1
    at the current pixel."""
    kernel = coefficients.clone()
    kernel[..., 2, 2] = -1
    return kernel


def ar_response(coefficients: Tensor, signals: Tensor) -> Tensor:
    """Mean ReLU response [P, S] of each process's :func:`matching_filter` (``coefficients``
    [P, C, 3, 3]) on each signal [S, C, H, W], the signals scaled to unit RMS: near 0 where a
    process meets its own signal, large where the two differ."""
    unit = signals / signals.pow(2).mean((1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    kernels = matching_filter(coefficients).to(unit.dtype)
    return F.relu(F.conv2d(unit, kernels)).mean((2, 3)).T


def find_processes(classes: int, channels: int, size: tuple[int, int], generator: torch.Generator,
                   trials: int = 2, max_rounds: int = 50) -> Tensor:
    """``classes`` AR processes [K, C, 3, 3] for signals of ``size`` (H, W), drawn with ``generator``.

    Single-channel candidates are drawn :data:`POOL` at a time (Gaussian coefficients, the eight
    normalised to sum 1) until there are ``classes`` · C stable ones: ``trials`` signals of each,
    started from unit Gaussian noise, stay finite with an RMS of at most :data:`STABLE_RMS` (they
    never outgrow their start; about a fifth of the candidates pass). Consecutive stable channels
    form candidate processes, from which K are picked greedily, each maximising its smallest
    :func:`ar_response` to and from the ones already picked, so every pair of classes is as easy to
    tell apart as the pool allows (the source kept candidates above a fixed response threshold).
    """
    stable: list[Tensor] = []
    height, width = size[0] + CROP, size[1] + CROP
    candidates = max(2 * classes, classes + 8)
    for _ in range(max_rounds):
        b = torch.randn(POOL, 1, WINDOW, WINDOW, generator=generator, dtype=torch.float64)
        b[..., 2, 2] = 0
        b /= b.sum((2, 3), keepdim=True)
        for side in sorted({(min(height, 36), min(width, 36)), (height, width)}):  # cheap check first
            b = b[_stable(b, side, trials, generator)]
        stable += list(b)
        if len(stable) >= candidates * channels:
            break
    count = len(stable) // channels
    if count < classes:
        raise RuntimeError(f"found only {count} stable autoregressive processes for {classes} classes")
    coefficients = torch.cat(stable[:count * channels]).reshape(count, channels, WINDOW, WINDOW)
    start = torch.randn(count, channels, height, width, generator=generator, dtype=torch.float64)
    response = ar_response(coefficients, ar_generate(coefficients, start))
    separation = torch.minimum(response, response.T)
    separation.fill_diagonal_(float("inf"))
    chosen = [0]
    for _ in range(classes - 1):
        score = separation[:, chosen].min(1).values
        score[chosen] = -1
        chosen.append(int(score.argmax()))
    return coefficients[chosen].float()


def _stable(b: Tensor, side: tuple[int, int], trials: int, generator: torch.Generator) -> Tensor:
    """Which single-channel processes ``b`` [P, 1, 3, 3] keep ``trials`` signals of ``side``
    finite and at an RMS of at most :data:`STABLE_RMS`."""
    start = torch.randn(len(b) * trials, 1, *side, generator=generator, dtype=torch.float64)
    rms = ar_generate(b.repeat_interleave(trials, 0), start).pow(2).mean((1, 2, 3)).sqrt()
    return (torch.isfinite(rms) & (rms <= STABLE_RMS)).reshape(len(b), trials).all(1)


class Autoregressive(Perturbation):
    """``Autoregressive(model, eps=8)(x, y)``: each image plus a fresh signal of its class's process.

    ``model`` is not trained on or differentiated (the method is data-free): it says which device
    to work on and, unless ``classes`` is given, how many processes to draw (its output width on
    the first image, as :class:`~faceguard.attacks.AdversarialPoison` reads it), so every batch of
    a corpus gets the same processes whichever labels it holds. :attr:`processes` holds the last
    coefficients [K, C, 3, 3], the same for every call with the same seed, class count, channels
    and image size. Each Δ is scaled to ‖Δ‖∞ = ε, then projected to keep x + Δ in [0, 1].
    """

    name = "autoregressive"
    data_free = True
    takes_classes = True

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, *, classes: int | None = None,
                 **changes: object) -> None:
        super().__init__(model, settings, **changes)
        if classes is not None and classes < 1:
            raise ValueError(f"autoregressive perturbations need at least 1 class, got {classes}")
        self.classes = classes
        self.processes: Tensor | None = None
        self._found: dict[tuple[int, int, int, int], Tensor] = {}

    def coefficients(self, classes: int, channels: int, size: tuple[int, int]) -> Tensor:
        """The processes for this seed, class count, channel count and image size (found once)."""
        key = (classes, channels, *size)
        if key not in self._found:
            generator = torch.Generator().manual_seed(self.settings.seed)
            self._found[key] = find_processes(classes, channels, size, generator)
        return self._found[key]

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.classes is None:
            self.classes = self.output_width(x)
        classes = self.classes
        if int(y.max()) >= classes:
            raise ValueError(f"label {int(y.max())} has no process: only {classes} classes")
        _, channels, height, width = x.shape
        self.processes = self.coefficients(classes, channels, (height, width))
        start = torch.randn(len(x), channels, height + CROP, width + CROP, dtype=torch.float64)
        signal = ar_generate(self.processes[y.cpu()], start)
        delta = signal / signal.abs().amax((1, 2, 3), keepdim=True).clamp_min(1e-12) * self.radius
        return self.project(x, delta.to(x.device, x.dtype))
