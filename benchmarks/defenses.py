"""Defenses a victim may use against protected training data (the paper's Table 6).

* ``smoothing`` — Gaussian smoothing of every training image, radius 2 (5×5 kernel), kornia.
* ``jpeg`` — re-encode every training image as JPEG (the config's quality, 75 by default), Pillow;
  ``jpeg10``, ``jpeg50``, ``jpeg75`` at that quality.
* ``grayscale`` — every training image to its luma (ITU-R 601, kornia), repeated on three channels.
* ``noise`` — fresh uniform ℓ∞ noise of the poison's ε added to every training view, every epoch.
* ``advtrain`` — adversarial training (Madry et al.) with 2 PGD steps at the poison's ε: the cheap
  robust victim.
* ``dpsgd`` — DP-SGD with Opacus: per-sample gradient clipping and Gaussian noise (clip 0.1,
  σ = 0.01·clip). BatchNorm mixes samples, so Opacus' ModuleValidator replaces it by GroupNorm.

Data defenses return a new uint8 dataset; the training-time ones change how the victim is trained.
"""
from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from recognition.datasets import ImageTensorDataset
from recognition.training import IndexedDataset, TrainConfig, augment_batch, keyed_words

JPEG_QUALITIES = (10, 50, 75)
DEFENSES = ("none", "dpsgd", "noise", "smoothing", "jpeg", *(f"jpeg{q}" for q in JPEG_QUALITIES), "grayscale",
            "advtrain")
TRAINING_DEFENSES = ("dpsgd", "advtrain")  # change how the victim trains, not the images
DATA_DEFENSES = tuple(d for d in DEFENSES if d not in ("none", *TRAINING_DEFENSES))
ADVTRAIN_STEPS = 2  # PGD steps per batch of the cheap adversarial-training victim


def gaussian_smoothing(images: Tensor, sigma: float = 1.0, radius: int = 2) -> Tensor:
    """Blur uint8 images [N, C, H, W] with a (2·radius+1)² Gaussian kernel; returns uint8."""
    import kornia.filters

    size = 2 * radius + 1
    out = [kornia.filters.gaussian_blur2d(chunk.float() / 255, (size, size), (sigma, sigma), border_type="reflect")
           for chunk in images.split(1024)]
    return (torch.cat(out) * 255).round().clamp(0, 255).to(torch.uint8)


def jpeg_reencode(images: Tensor, quality: int = 75) -> Tensor:
    """Encode every uint8 image [N, C, H, W] (C = 3, or 1 for gray) as JPEG at ``quality`` and
    decode it again (Pillow)."""
    out = torch.empty_like(images)
    mode = "L" if images.shape[1] == 1 else "RGB"
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = torch.from_numpy(np.array(decoded.convert(mode))).reshape(*images.shape[2:], -1).permute(2, 0, 1)
    return out


def grayscale(images: Tensor) -> Tensor:
    """uint8 RGB images [N, 3, H, W] as their luma on three channels (what a colour net still reads);
    gray images [N, 1, H, W] are returned as they are."""
    import kornia.color

    if images.shape[1] == 1:
        return images

    luma = kornia.color.rgb_to_grayscale(images.float() / 255)
    return (luma * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


class UniformNoiseDataset(Dataset):
    """Adds fresh uniform noise in [−ε, ε] to each item on every access (clamped to [0, 1]).

    The noise comes from the global torch RNG, which the trainer re-seeds every epoch, so a run is
    reproducible while every epoch sees new noise.
    """

    def __init__(self, base: Dataset, eps: float) -> None:
        self.base, self.eps = base, eps

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.base[index]
        noise = (torch.rand_like(image) * 2 - 1) * self.eps
        return (image + noise).clamp_(0, 1), label


def adversarial_training_loss(eps: float, steps: int = ADVTRAIN_STEPS) -> Callable:
    """A training loss (``recognition.losses.TrainingLoss``) that trains on adversarial examples
    (Madry et al.): each batch is first moved by ``steps`` signed ℓ∞ PGD steps of 2.5·ε/steps from
    a random start in the ε-ball (``eps`` in [0, 1] units) to maximise the model's CE, in eval mode
    so batch statistics are not updated by the attack. The cheap robust victim of issue #18:
    availability poisons live in non-robust features, which adversarial training ignores."""
    def loss(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        was_training = model.training
        model.eval()
        delta = (torch.rand_like(images) * 2 - 1) * eps
        for _ in range(steps):
            delta.requires_grad_(True)
            attack = nn.functional.cross_entropy(model((images + delta).clamp(0, 1)), labels)
            (grad,) = torch.autograd.grad(attack, delta)
            delta = (delta.detach() + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
        model.train(was_training)
        logits = model((images + delta).clamp(0, 1))
        return nn.functional.cross_entropy(logits, labels, reduction="none"), logits
    return loss


def apply_data_defense(dataset: ImageTensorDataset, defense: str, eps: int, sigma: float = 1.0,
                       quality: int = 75) -> Dataset:
    """The training set the victim sees under ``defense`` (the ``TRAINING_DEFENSES`` change training,
    not data);
    ``eps`` (pixel units) is the size of the ``noise`` defense."""
    if defense not in DEFENSES:
        raise ValueError(f"unknown defense {defense!r}; choose from {DEFENSES}")
    if defense == "smoothing":
        return ImageTensorDataset(gaussian_smoothing(dataset.images, sigma), dataset.labels, dataset.classes)
    if defense.startswith("jpeg"):
        quality = int(defense[4:]) if defense != "jpeg" else quality
        return ImageTensorDataset(jpeg_reencode(dataset.images, quality), dataset.labels, dataset.classes)
    if defense == "grayscale":
        return ImageTensorDataset(grayscale(dataset.images), dataset.labels, dataset.classes)
    if defense == "noise":
        return UniformNoiseDataset(dataset, eps / 255)
    return dataset


def train_dp_sgd(model: nn.Module, dataset: Dataset, config: TrainConfig, clip: float = 0.1,
                 noise: float = 0.01, device: str | torch.device = "cpu") -> nn.Module:
    """Train with DP-SGD (Opacus): per-sample gradients clipped to ``clip``, Gaussian noise of std
    ``noise``·clip, SGD with the config's LR schedule and crop/flip augmentation.

    Returns the trained model (BatchNorm replaced by GroupNorm, Opacus wrappers removed).
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    model = ModuleValidator.fix(model).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(IndexedDataset(dataset), batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    engine = PrivacyEngine(secure_mode=False)
    private, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                     noise_multiplier=noise, max_grad_norm=clip,
                                                     poisson_sampling=False)
    steps = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if config.schedule == "cosine" else \
        torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(m * steps) for m in config.milestones], config.gamma)
    private.train()
    for epoch in range(1, config.epochs + 1):
        torch.manual_seed(int(keyed_words([0], config.seed, epoch, count=1)[0, 0]))
        for images, labels, indices in loader:
            images = augment_batch(images.to(device), indices, config.augment, config.seed, epoch)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(private(images), labels.to(device)).backward()
            optimizer.step()
            schedule.step()
    return private._module.eval()
