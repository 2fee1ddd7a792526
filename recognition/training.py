"""Supervised training and evaluation of image classifiers, on one or several processes (torchrun).

This is the "victim" training recipe of the experiments: SGD with momentum 0.9 and weight decay
5e-4, a multistep (or cosine) schedule, random crop with 4-pixel padding plus horizontal flip for
CIFAR or flip only for aligned faces. Augmentation runs on whole batches on the training device
(cheap on GPU, no per-image Python work), but its random draws are keyed by (seed, epoch,
dataset index): a sample gets the same crop and flip whichever process or batch it lands in.
Shuffling is keyed by (seed, epoch) too (``recognition.distributed.shard_sampler``), and the global
RNG (dropout) is re-seeded every epoch, so a run is reproducible for a fixed seed on CPU, resuming
from a checkpoint continues it exactly, and W processes see the same global batches as one.

Several processes (``torchrun``): the model is wrapped in DistributedDataParallel and
``config.batch_size`` is the *global* batch, split evenly over the processes; DDP averages the
processes' mean-loss gradients, i.e. takes the gradient of the global mean loss. On CUDA, BatchNorm
becomes SyncBatchNorm (global-batch statistics), so the run matches one process up to float
rounding. On CPU (gloo) each process normalises with its own shard's statistics; ``ghost_batches
= W`` makes a single process do the same (each batch split into W interleaved chunks, exactly the
W shards), which reproduces the W-process CPU run, BatchNorm running statistics included: DDP
broadcasts rank 0's buffers at every forward pass, so they only ever see rank 0's shard, and ghost
batching likewise keeps the statistics of the first chunk (the other chunks' updates are undone).
Tested (tests/test_distributed.py, W = 2): bitwise equal when both runs use the same number of
intra-op threads; with different thread counts CPU reductions round differently, and training
amplifies that (measured drift: docs/recognition.md, "train").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from recognition.checkpoint import load_training_checkpoint, save_training_checkpoint
from recognition.distributed import (
    DistributedContext,
    all_reduce_sum,
    broadcast_buffers,
    data_parallel,
    evaluating,
    init_distributed,
    shard_sampler,
)
from recognition.losses import TrainingLoss, cross_entropy_loss

__all__ = [
    "AUGMENTATIONS", "SCHEDULES", "TrainConfig", "augment_batch", "evaluate_accuracy", "keyed_words", "predict",
    "train_classifier",
]

SCHEDULES = ("multistep", "cosine")
AUGMENTATIONS = ("crop_flip", "flip", "none")
CROP_PADDING = 4
# Config fields a resumed run may change: they do not alter the trajectory (epochs extends it).
_RESUMABLE_CHANGES = frozenset({"epochs", "num_workers", "checkpoint", "ghost_batches"})


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the usual CIFAR-10 ResNet recipe).

    batch_size: global batch, divided evenly over torchrun processes; incomplete last batches are
    dropped so every step has equal shards. augment: "crop_flip" (4-pixel padded random crop +
    flip), "flip" (faces) or "none"; True / False mean "crop_flip" / "none". ghost_batches: split
    each process's batch into this many interleaved chunks for BatchNorm (see the module doc).
    checkpoint: path of a safetensors file written (by rank 0) after every epoch, with the
    optimizer state beside it, for ``train_classifier(..., resume=True)``.
    """

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.375, 0.625, 0.875)  # fractions of `epochs` (multistep only)
    gamma: float = 0.1
    augment: str | bool = "crop_flip"
    seed: int = 0
    num_workers: int = 0
    ghost_batches: int = 1
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):
            self.augment = "crop_flip" if self.augment else "none"
        self.milestones = tuple(self.milestones)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.ghost_batches < 1:
            raise ValueError("epochs, batch_size and ghost_batches must be positive")


def train_classifier(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    device: str | torch.device | None = None,
    test_set: Dataset | None = None,
    progress: bool = True,
    loss_fn: TrainingLoss | None = None,
    resume: bool = False,
    model_config: dict | None = None,
) -> list[dict]:
    """Train `model` in place on `train_set` (items: float image [C, H, W], int label).

    The model is moved to `device` (default: CUDA when available; ``cuda:LOCAL_RANK`` under
    torchrun, see ``init_distributed``) and left there. Returns one record per epoch: epoch, loss
    (mean per-sample loss), train_acc (percent, None when `loss_fn` returns no logits), lr (used
    during the epoch) and test_acc when `test_set` is given; metrics are over all processes.
    `loss_fn` is a ``recognition.losses.TrainingLoss`` (default: ``cross_entropy_loss``).
    Re-seeds the global torch RNG every epoch from (seed, epoch, rank).

    With ``config.checkpoint`` the model (``save_checkpoint`` with `model_config` as its JSON,
    what ``load_model`` needs) and the optimizer state are saved after every epoch. ``resume=True``
    loads that checkpoint and continues after its last epoch, giving the same weights as an
    uninterrupted run; the returned history then includes the earlier epochs. Only ``epochs``
    (to extend a run: multistep milestones are then recomputed for the new length),
    ``num_workers``, ``checkpoint`` and the split of ``ghost_batches`` x processes may change.
    """
    context = init_distributed("auto" if device is None else device)
    per_process = _per_process_batch(config, context, len(train_set))
    loss_fn = loss_fn or cross_entropy_loss
    model.to(context.device)
    indexed = IndexedDataset(train_set)
    sampler = shard_sampler(indexed, context, config.seed)
    loader = DataLoader(indexed, batch_size=per_process, sampler=sampler, drop_last=True,
                        num_workers=config.num_workers, pin_memory=context.device.type == "cuda")
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = _scheduler(optimizer, config)
    shards = context.world_size * config.ghost_batches
    history = _resume(config, model, optimizer, scheduler, shards) if resume else []
    model, network = data_parallel(model, context)
    with tqdm(total=(config.epochs - len(history)) * len(loader), desc="train",
              disable=not (progress and context.is_main)) as bar:
        for epoch in range(len(history) + 1, config.epochs + 1):
            sampler.set_epoch(epoch)
            torch.manual_seed(int(keyed_words([context.rank], config.seed, epoch, count=1)[0, 0]))
            record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            record.update(_train_epoch(network, loader, optimizer, loss_fn, config, epoch, context, bar))
            scheduler.step()
            broadcast_buffers(model, context)
            if test_set is not None:
                record["test_acc"] = _sharded_accuracy(model, test_set, context)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
            history.append(record)
            if config.checkpoint is not None and context.is_main:
                state = {"epoch": epoch, "history": history, "config": asdict(config), "shards": shards}
                save_training_checkpoint(config.checkpoint, model, model_config or {}, optimizer, state)
    return history


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device | None = None
) -> torch.Tensor:
    """Predicted class index (argmax of the logits) for every item of `dataset`, as int64 on CPU."""
    return torch.cat([logits.argmax(1).cpu() for logits, _ in _eval_batches(model, dataset, batch_size, device)])


def evaluate_accuracy(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device | None = None
) -> float:
    """Top-1 accuracy in percent, in eval mode (the model's previous mode is restored)."""
    correct, total = _count_correct(model, dataset, batch_size, device)
    return 100.0 * correct / max(total, 1)


def keyed_words(indices: np.ndarray | torch.Tensor | list[int], *key: int, count: int) -> np.ndarray:
    """uint64 pseudo-random words [len(indices), count]: a pure function of (key, index, word number).

    Counter-based (SplitMix64 finaliser chained over the key parts), so any sample's draws can be
    computed without a generator state, in any order or process.
    """
    state = np.zeros(len(indices), dtype=np.uint64)
    for part in key:
        state = _splitmix64(state ^ np.uint64(part & 0xFFFFFFFFFFFFFFFF))
    state = _splitmix64(state ^ np.asarray(indices, dtype=np.int64).astype(np.uint64))
    return _splitmix64(state[:, None] ^ np.arange(1, count + 1, dtype=np.uint64))


def augment_batch(images: torch.Tensor, indices: torch.Tensor, mode: str, seed: int, epoch: int) -> torch.Tensor:
    """Augment a batch [B, C, H, W] whose items are dataset items `indices`, per sample.

    "flip": horizontal flip with probability 1/2; "crop_flip": additionally a random H x W crop
    of the image zero-padded by 4 pixels (as kornia's RandomCrop(padding=4)); "none": unchanged.
    The draws come from ``keyed_words(indices, seed, epoch)``, never from the global RNG.
    """
    if mode == "none":
        return images
    words = torch.from_numpy((keyed_words(indices, seed, epoch, count=3) >> np.uint64(11)).astype(np.int64))
    words = words.to(images.device)
    if mode == "crop_flip":
        images = _shifted_crops(images, words[:, 1:] % (2 * CROP_PADDING + 1))
    flip = (words[:, 0] & 1).bool().view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(-1), images)


class IndexedDataset(Dataset):
    """Items of `dataset` with their index appended, to key each sample's augmentation."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        return (*self.dataset[index], index)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 step on uint64 arrays (wrapping arithmetic): a well-mixed bijection."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _shifted_crops(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Crop each image of the zero-padded batch at its own (row, column) offset [B, 2]."""
    n, c, h, w = images.shape
    padded = F.pad(images, (CROP_PADDING,) * 4)
    rows = (offsets[:, 0:1] + torch.arange(h, device=images.device)).view(n, 1, h, 1)
    cols = (offsets[:, 1:2] + torch.arange(w, device=images.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]


def _per_process_batch(config: TrainConfig, context: DistributedContext, samples: int) -> int:
    """Batch size of one process, after checking the splits are exact and a step fits the data."""
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {context.world_size} processes")
    per_process = config.batch_size // context.world_size
    if per_process % config.ghost_batches:
        raise ValueError(f"the per-process batch {per_process} is not divisible by "
                         f"ghost_batches {config.ghost_batches}")
    if samples < config.batch_size:
        raise ValueError(f"{samples} training samples do not fill one batch of {config.batch_size}")
    return per_process


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule; multistep milestones are never before epoch 1."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    milestones = [max(1, round(fraction * config.epochs)) for fraction in config.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.gamma)


def _resume(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    shards: int,
) -> list[dict]:
    """Load `config.checkpoint` into model and optimizer, position the schedule; return the history."""
    if config.checkpoint is None:
        raise ValueError("resume=True needs config.checkpoint")
    state = load_training_checkpoint(config.checkpoint, model, optimizer)
    saved, current = state["config"], TrainConfig(**state["config"])
    changed = [key for key, value in asdict(config).items()
               if key not in _RESUMABLE_CHANGES and value != getattr(current, key)]
    if changed or state["shards"] != shards:
        raise ValueError(f"cannot resume {config.checkpoint}: {changed or 'ghost_batches x processes'} differ "
                         f"from the saved training config {saved}")
    if state["epoch"] > config.epochs:
        raise ValueError(f"{config.checkpoint} is at epoch {state['epoch']}, beyond epochs={config.epochs}")
    scheduler.last_epoch = state["epoch"]  # the learning rate itself is restored with the optimizer
    return state["history"]


def _train_epoch(
    network: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: TrainingLoss,
    config: TrainConfig,
    epoch: int,
    context: DistributedContext,
    bar: tqdm,
) -> dict:
    """One pass over `loader`; returns the epoch's mean loss and training accuracy over all processes.

    Each batch is split into ``ghost_batches`` interleaved chunks (items k, k + G, ...: rank k's
    shard when a single process emulates G processes); the chunks' mean-loss gradients are
    averaged. Buffers updated by chunks after the first are put back, as DDP keeps rank 0's.
    """
    network.train()
    device, chunks = context.device, config.ghost_batches
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, samples
    has_logits = True
    for images, labels, indices in loader:
        images = augment_batch(images.to(device, non_blocking=True), indices, config.augment, config.seed, epoch)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        for chunk in range(chunks):
            sync = chunk == chunks - 1 or not isinstance(network, nn.parallel.DistributedDataParallel)
            with contextlib.nullcontext() if sync else network.no_sync():
                output = loss_fn(network, images[chunk::chunks], labels[chunk::chunks])
                losses, logits = output if isinstance(output, tuple) else (output, None)
                (losses.mean() / chunks).backward()
            if chunk == 0 and chunks > 1:
                first_buffers = [buffer.detach().clone() for buffer in network.buffers()]
            # Accumulate on the device: no host synchronisation per step.
            totals[0] += losses.detach().sum()
            totals[2] += len(losses)
            if logits is None:
                has_logits = False
            else:
                totals[1] += (logits.detach().argmax(1) == labels[chunk::chunks]).sum()
        if chunks > 1:
            with torch.no_grad():
                for buffer, kept in zip(network.buffers(), first_buffers):
                    buffer.copy_(kept)
        optimizer.step()
        bar.update()
    loss_sum, correct, seen = all_reduce_sum(totals, context).tolist()
    return {"loss": loss_sum / seen, "train_acc": 100.0 * correct / seen if has_logits else None}


def _sharded_accuracy(model: nn.Module, dataset: Dataset, context: DistributedContext) -> float:
    """Accuracy on `dataset`, each process evaluating items rank, rank + W, ... (no padding)."""
    shard = Subset(dataset, range(context.rank, len(dataset), context.world_size))
    counts = torch.tensor(_count_correct(model, shard, 256, None), dtype=torch.float64, device=context.device)
    correct, total = all_reduce_sum(counts, context).tolist()
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def _count_correct(
    model: nn.Module, dataset: Dataset, batch_size: int, device: str | torch.device | None
) -> tuple[int, int]:
    """(correct top-1 predictions, items) on `dataset`, in eval mode."""
    correct = total = 0
    for logits, labels in _eval_batches(model, dataset, batch_size, device):
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
    return correct, total


def _eval_batches(
    model: nn.Module, dataset: Dataset, batch_size: int, device: str | torch.device | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (logits, labels) on the evaluation device for `dataset` in order, in eval mode."""
    with evaluating(model, device) as device:
        for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            yield model(images.to(device)), labels.to(device)
