"""Supervised training and evaluation of image classifiers (SGD, step or cosine schedule).

This is the "victim" training recipe of the experiments: the standard CIFAR-style setup
(SGD with momentum and weight decay, random crop with 4-pixel padding and horizontal flip).
Augmentation runs on whole batches with kornia on the training device, so it is cheap on
GPU and needs no per-image Python work in data loading. Runs are reproducible for a fixed
seed on CPU: the seed fixes the shuffling, the augmentation draws and dropout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

# loss_fn(model, images, labels) -> per-sample loss [B], or (per-sample loss [B], logits [B, K]);
# returning logits lets training report its accuracy.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]

SCHEDULES = ("multistep", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the usual CIFAR-10 ResNet recipe)."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.375, 0.625, 0.875)  # fractions of `epochs` (multistep only)
    gamma: float = 0.1
    augment: bool = True
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn "auto" (CUDA when available, else CPU) or an explicit device name into a device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return device


def cross_entropy_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Default loss: per-sample cross entropy of model(images), with the logits for accuracy."""
    logits = model(images)
    return F.cross_entropy(logits, labels, reduction="none"), logits


def train_classifier(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    device: str | torch.device | None = None,
    test_set: Dataset | None = None,
    progress: bool = True,
    loss_fn: LossFn | None = None,
) -> list[dict]:
    """Train `model` in place on `train_set` (items: float image [C, H, W], int label).

    The model is moved to `device` (default: CUDA when available) and left there. Returns one
    record per epoch: epoch, loss (mean per-sample loss), train_acc (percent, None when
    `loss_fn` returns no logits), lr (used during the epoch) and test_acc when `test_set` is given.
    Seeds the global torch RNG with `config.seed` (augmentation draws from it).
    """
    device = resolve_device("auto" if device is None else device)
    loss_fn = loss_fn or cross_entropy_loss
    torch.manual_seed(config.seed)
    model.to(device)
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    augment = _augmentation(train_set[0][0].shape[-2:]).to(device) if config.augment else None
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = _scheduler(optimizer, config)
    history = []
    with tqdm(total=config.epochs * len(loader), desc="train", disable=not progress) as bar:
        for epoch in range(1, config.epochs + 1):
            record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            record.update(_train_epoch(model, loader, optimizer, loss_fn, augment, device, bar))
            scheduler.step()
            if test_set is not None:
                record["test_acc"] = evaluate_accuracy(model, test_set, device=device)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
            history.append(record)
    return history


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device | None = None
) -> torch.Tensor:
    """Predicted class index (argmax of the logits) for every item of `dataset`, as int64 on CPU."""
    return torch.cat([logits.argmax(1).cpu() for logits, _ in _eval_batches(model, dataset, batch_size, device)])


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device | None = None
) -> float:
    """Top-1 accuracy in percent, in eval mode (the model's previous mode is restored)."""
    correct = total = 0
    for logits, labels in _eval_batches(model, dataset, batch_size, device):
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
    return 100.0 * correct / max(total, 1)


def _augmentation(image_size: tuple[int, int]) -> nn.Module:
    """Random crop of the original size from the image padded by 4 pixels, then random flip."""
    return nn.Sequential(K.RandomCrop(tuple(image_size), padding=4), K.RandomHorizontalFlip())


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule; multistep milestones are never before epoch 1."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    milestones = [max(1, round(fraction * config.epochs)) for fraction in config.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.gamma)


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    augment: nn.Module | None,
    device: torch.device,
    bar: tqdm,
) -> dict:
    """One pass over `loader`; returns the epoch's mean loss and training accuracy."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    has_logits = True
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if augment is not None:
            images = augment(images)
        output = loss_fn(model, images, labels)
        losses, logits = output if isinstance(output, tuple) else (output, None)
        optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        optimizer.step()
        # Accumulate on the device: no host synchronisation per step.
        loss_sum += losses.detach().sum()
        if logits is None:
            has_logits = False
        else:
            correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
        bar.update()
    return {
        "loss": float(loss_sum) / seen,
        "train_acc": 100.0 * int(correct) / seen if has_logits else None,
    }


def _eval_batches(
    model: nn.Module, dataset: Dataset, batch_size: int, device: str | torch.device | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (logits, labels) on the evaluation device for `dataset` in order, in eval mode."""
    if device is None:
        device = next(model.parameters()).device
    else:
        device = resolve_device(device)
        model.to(device)
    was_training = model.training
    model.eval()
    try:
        for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            yield model(images.to(device)), labels.to(device)
    finally:
        model.train(was_training)
