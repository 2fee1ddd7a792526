"""Multi-process data-parallel training under ``torchrun``: process group, device, sharding, reductions.

``torchrun --nproc_per_node=W`` starts W copies of a script with ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` in the environment. ``init_distributed`` turns that into a process group ("nccl"
on CUDA, "gloo" on CPU) and a device (``cuda:LOCAL_RANK`` on CUDA); without torchrun it is a
no-op describing a single process, so the same training code serves both cases.

Sharding: every process uses ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)``,
also a single process. Its permutation depends only on (seed, epoch), never on the number of
processes, and rank r reads items r, r + W, r + 2W, ... of it. With a per-process batch of B / W,
batch j of rank r therefore holds positions jB + r + iW (i < B / W) of the permutation: the ranks
together hold exactly positions jB .. jB + B - 1, i.e. batch j of a single process with batch B.
``tests/test_distributed.py`` checks this.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from recognition.device import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints progress and writes files."""
        return self.rank == 0


@contextmanager
def evaluating(model: nn.Module, device: str | torch.device | None = None) -> Iterator[torch.device]:
    """Run ``model`` in eval mode on ``device`` (None: where its parameters are), yielding the device.

    The model's previous train/eval mode is restored on exit; with an explicit device the model
    is moved there and left there.
    """
    if device is None:
        device = next(model.parameters()).device
    else:
        device = resolve_device(device)
        model.to(device)
    was_training = model.training
    model.eval()
    try:
        yield device
    finally:
        model.train(was_training)


def init_distributed(device: str | torch.device = "auto") -> DistributedContext:
    """Join the torchrun process group (if any) and pick this process's device.

    Idempotent: reuses a process group that is already initialised. Without one and with
    ``WORLD_SIZE`` unset or 1 this is a single process on ``resolve_device(device)``. With several
    processes a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process, any index in `device`
    is ignored) and the backend is "nccl"; a CPU device uses "gloo".
    """
    resolved = resolve_device(device)
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(rank=0, world_size=1, device=resolved)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        cuda = resolved.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=resolved if cuda else None)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=resolved)


def close_distributed() -> None:
    """Leave the process group, if this process is in one (end of a torchrun script)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_sampler(dataset: Dataset, context: DistributedContext, seed: int) -> DistributedSampler:
    """This rank's share of a (seed, epoch)-keyed permutation of `dataset`; call ``set_epoch`` per epoch.

    ``drop_last=True`` drops the ``len(dataset) % world_size`` leftover items so every rank gets
    the same number (the DataLoader then drops the last incomplete batch as well).
    """
    return DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True
    )


def data_parallel(model: nn.Module, context: DistributedContext) -> tuple[nn.Module, nn.Module]:
    """Return (module, network to train): the model itself, or wrapped in DDP under several processes.

    On CUDA the BatchNorm layers are first converted to SyncBatchNorm (statistics over the global
    batch; parameters and state_dict keys are unchanged). SyncBatchNorm does not run on CPU, so
    there each process normalises with the statistics of its own shard. The returned module is
    the one to save and evaluate (the conversion replaces layers inside `model`).
    """
    if context.world_size == 1:
        return model, model
    if context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model, nn.parallel.DistributedDataParallel(model, device_ids=[context.device.index])
    return model, nn.parallel.DistributedDataParallel(model)


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum `tensor` over all processes, in place (returned for convenience). A CPU tensor under
    NCCL (which reduces only CUDA tensors) goes through the process's device and back."""
    return _all_reduce(tensor, context, dist.ReduceOp.SUM)


def all_reduce_max(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The element-wise maximum of `tensor` over all processes, in place, as :func:`all_reduce_sum`."""
    return _all_reduce(tensor, context, dist.ReduceOp.MAX)


def _all_reduce(tensor: torch.Tensor, context: DistributedContext, op: dist.ReduceOp) -> torch.Tensor:
    if context.world_size > 1:
        if context.device.type == "cuda" and tensor.device != context.device:
            moved = tensor.to(context.device)
            dist.all_reduce(moved, op=op)
            tensor.copy_(moved)
        else:
            dist.all_reduce(tensor, op=op)
    return tensor


def barrier(context: DistributedContext) -> None:
    """Wait until every process gets here (no-op for a single process)."""
    if context.world_size > 1:
        dist.barrier()


def broadcast_buffers(module: nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process.

    DDP broadcasts them at the start of each forward pass, so after the last step of an epoch
    the other ranks still hold statistics updated by their own shard; this makes every process
    evaluate and return the same model as rank 0 saves.
    """
    if context.world_size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
