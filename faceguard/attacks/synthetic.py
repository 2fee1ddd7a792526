"""Synthetic shortcut noise (Yu et al., KDD 2022, "Availability Attacks Create Shortcuts"): a
data-free, class-wise availability poison.

Yu et al. show that the poisons that work (error-minimizing, adversarial) all hand the victim a
linearly separable shortcut to the label, and that a synthetic one works as well: every class gets
one point of a well-separated mixture in a low-dimensional space, each coordinate enlarged to a
patch of the image. Here every class gets one fixed pattern: a sign per cell of a ``grid`` x
``grid`` grid and channel, each cell enlarged to a block of the image (nearest neighbour), times
ε; the signs are rows of a randomised Hadamard matrix, so any two classes differ on half the
cells. A network trained on images carrying it fits the pattern before the images and learns
little else; the patterns cost nothing to make and need neither data nor a surrogate.

Differences from the published recipe: signs at ±ε (an ℓ∞ budget spent in full) instead of
ℓ2-normalised Gaussian points; orthogonal codes instead of random class centres; no per-image
jitter around the class's point; and ``mirror`` (default): each pattern is symmetric left-right,
so the flip augmentation every face recognizer trains with shows the victim one pattern per class
instead of two. The block size, the mirroring and the codes were chosen on the faces benchmark at
ε = 16 (benchmarks/results/faces-cpu-synthetic.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.linalg import hadamard
from torch import Tensor, nn

from faceguard.attacks.base import Perturbation
from faceguard.settings import CraftSettings

GRID = 8  # cells per side of the pattern grid: 4-pixel blocks on a 32-pixel image


def orthogonal_codes(classes: int, cells: int, generator: torch.Generator) -> Tensor:
    """±1 codes [K, cells], one per class: rows of a Sylvester-Hadamard matrix whose rows, columns
    and column signs are drawn at random. Any two codes agree on exactly half the cells when
    ``cells`` is a power of two and ``classes <= cells``; otherwise the matrix is the next power of
    two and its columns are a random subset, so they agree on about half."""
    order = 1 << (max(classes, cells) - 1).bit_length()
    matrix = torch.from_numpy(hadamard(order)).float()
    rows = torch.randperm(order, generator=generator)[:classes]
    columns = torch.randperm(order, generator=generator)[:cells]
    signs = torch.randint(0, 2, (cells,), generator=generator).float() * 2 - 1
    return matrix[rows][:, columns] * signs


def block_patterns(classes: int, channels: int, size: tuple[int, int], generator: torch.Generator,
                   grid: int = GRID, mirror: bool = True) -> Tensor:
    """One ±1 pattern per class [K, C, H, W]: a sign per cell of a ``grid`` x ``grid`` grid (per
    channel), each cell enlarged to its block of the image (nearest neighbour; blocks differ by at
    most one pixel where ``grid`` does not divide the size). With ``mirror`` the right half of the
    grid is the left half mirrored, so every pattern equals its own flip. Each channel's cells are
    :func:`orthogonal_codes` (drawn for each channel), so two classes' patterns agree on half their
    cells: measured on faces, such patterns protected more than independent random signs
    (benchmarks/results/faces-cpu-synthetic.md)."""
    if grid < 1 or (mirror and grid < 2):
        raise ValueError(f"the pattern grid needs at least {2 if mirror else 1} cells per side, got {grid}")
    width = (grid + 1) // 2 if mirror else grid
    codes = torch.stack([orthogonal_codes(classes, grid * width, generator) for _ in range(channels)], dim=1)
    cells = codes.reshape(classes, channels, grid, width)
    if mirror:
        cells = torch.cat([cells, cells[..., :grid - width].flip(-1)], dim=-1)
    return F.interpolate(cells, size=size, mode="nearest")


class SyntheticNoise(Perturbation):
    """``SyntheticNoise(model, eps=8)(x, y)``: each image plus its class's block pattern times ε.

    ``model`` is neither trained nor differentiated (data-free): it says which device to work on
    and, unless ``classes`` is given, how many patterns to draw (its output width on the first
    image), so every batch of a corpus gets the same patterns whichever labels it holds. The
    patterns come from ``settings.seed`` alone (:attr:`patterns` holds the last [K, C, H, W]);
    x + Δ is then kept in [0, 1], which shortens Δ only where a pixel is already near black or white.
    """

    name = "synthetic"
    data_free = True
    takes_classes = True

    def __init__(self, model: nn.Module, settings: CraftSettings | None = None, *, classes: int | None = None,
                 grid: int = GRID, mirror: bool = True, **changes: object) -> None:
        super().__init__(model, settings, **changes)
        if classes is not None and classes < 2:
            raise ValueError(f"synthetic noise needs at least 2 classes, got {classes}")
        self.classes, self.grid, self.mirror = classes, grid, mirror
        self.patterns: Tensor | None = None

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.classes is None:
            self.classes = self.output_width(x)
        if int(y.max()) >= self.classes:
            raise ValueError(f"label {int(y.max())} has no pattern: only {self.classes} classes")
        delta = self.class_noise(x.shape[1], tuple(x.shape[2:]))[y.cpu()].to(x.device, x.dtype)
        return self.project(x, delta)

    def class_noise(self, channels: int, size: tuple[int, int]) -> Tensor:
        """Each class's Δ [K, C, H, W] (its pattern times ε, before the [0, 1] clamp of an image),
        drawn from ``settings.seed`` for the class count given or read (:attr:`patterns` keeps the
        ±1 patterns); ``faceguard protect`` pastes the same per-person noise."""
        if self.classes is None:
            raise ValueError("synthetic noise needs the class count: pass classes= or call it on images")
        generator = torch.Generator().manual_seed(self.settings.seed)
        self.patterns = block_patterns(self.classes, channels, size, generator, self.grid, self.mirror)
        return self.patterns * self.radius
