"""Parameter-gradient utilities: target gradient T, crafting gradient G, per-image alignment.

Gradients are lists of tensors aligned with a list of parameters (the surrogate's trainable ones by
default). The target gradient is accumulated by streaming over a DataLoader, so memory does not grow
with the data set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from faceguard.losses import LossFn, reverse_cross_entropy

Grads = list[Tensor]


def trainable_params(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the alignment is computed over by default: all that require a gradient."""
    return [p for p in model.parameters() if p.requires_grad]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-less module)."""
    return next(model.parameters(), torch.empty(0)).device


def flat_dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """⟨a, b⟩ over lists of tensors, as a 0-d tensor (differentiable in both)."""
    return sum((u * v).sum() for u, v in zip(a, b))


def flat_norm(a: Sequence[Tensor]) -> Tensor:
    """‖a‖₂ over a list of tensors."""
    return torch.sqrt(sum(u.pow(2).sum() for u in a))


def param_gradient(
    model: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, loss_fn: LossFn,
    create_graph: bool = False,
) -> Grads:
    """∇θ Σ_i loss_fn(model, x_i, y_i); with ``create_graph`` it stays differentiable w.r.t. x."""
    loss = loss_fn(model, x, y).sum()
    return list(torch.autograd.grad(loss, params, create_graph=create_graph))


def _as_loader(data: Dataset | DataLoader, fraction: float, seed: int, batch_size: int) -> DataLoader:
    """A loader over all of ``data`` or over a seeded random subset of ``round(fraction·N)`` items."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    loader = data if isinstance(data, DataLoader) else None
    dataset = loader.dataset if loader is not None else data
    if fraction == 1.0 and loader is not None:
        return loader
    if loader is not None:
        batch_size = loader.batch_size or batch_size
    if fraction < 1.0:
        n = len(dataset)
        keep = max(1, round(fraction * n))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep]
        dataset = Subset(dataset, sorted(order.tolist()))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def target_gradient(
    model: nn.Module,
    data: Dataset | DataLoader,
    params: Sequence[Tensor] | None = None,
    loss_fn: LossFn = reverse_cross_entropy,
    fraction: float = 1.0,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
    accumulate_dtype: torch.dtype | None = None,
) -> Grads:
    """T = ∇θ Σ_{(x,y)} L'(F(x), y), summed over ``data`` (or a random ``fraction`` of it).

    Streams batch by batch and keeps only the running sum, so memory is flat in the data size.
    ``accumulate_dtype=torch.float64`` keeps that sum in float64 (returned so), which makes it
    practically independent of how the batches are split across processes.
    The model is evaluated in eval mode (BatchNorm running statistics), the same function that the
    crafting objective differentiates; its previous mode is restored afterwards.
    """
    params = list(params) if params is not None else trainable_params(model)
    device = model_device(model)
    total = [torch.zeros_like(p, dtype=accumulate_dtype or p.dtype) for p in params]
    was_training = model.training
    model.eval()
    try:
        for x, y in tqdm(_as_loader(data, fraction, seed, batch_size), disable=not progress,
                         desc="target gradient"):
            for acc, g in zip(total, param_gradient(model, params, x.to(device), y.to(device), loss_fn)):
                acc.add_(g)
    finally:
        model.train(was_training)
    return total


def save_gradient(grads: Sequence[Tensor], path: str | Path) -> None:
    """Store a gradient (list of tensors) as safetensors, keys "0", "1", … in parameter order."""
    from safetensors.torch import save_file

    save_file({str(i): g.detach().cpu().contiguous() for i, g in enumerate(grads)}, str(path))


def load_gradient(path: str | Path, device: str | torch.device = "cpu") -> Grads:
    """Read a gradient written by :func:`save_gradient` (tensors only: loading runs no code)."""
    from safetensors.torch import load_file

    stored = load_file(str(path))
    return [stored[str(i)].to(device) for i in range(len(stored))]


class _LossModule(nn.Module):
    """Wraps ``loss_fn(model, x, y)`` as a module so torch.func can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(self.model, x, y).sum()


def per_sample_alignment(
    model: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, target: Sequence[Tensor],
    loss_fn: LossFn, chunk_size: int = 16,
) -> Tensor:
    """Per-image alignment loss ``1 − cos(T, ∇θ loss(x_i, y_i))`` as a tensor of shape [B].

    Uses torch.func per-sample gradients (vmap over chunks of ``chunk_size`` images, so memory is
    ``chunk_size × |θ|``). Needs the model in eval mode (no batch statistics).
    """
    names = _param_names(model, params)
    wrapper = _LossModule(model, loss_fn)
    frozen = {f"model.{n}": p.detach() for n, p in zip(names, params)}
    t_norm = flat_norm(target)

    def one_image(weights: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return functional_call(wrapper, weights, (xi.unsqueeze(0), yi.unsqueeze(0)))

    per_image_grad = vmap(grad(one_image), in_dims=(None, 0, 0))
    losses = []
    for xs, ys in zip(x.detach().split(chunk_size), y.split(chunk_size)):
        g = per_image_grad(frozen, xs, ys)
        grads = [g[f"model.{n}"].flatten(1) for n in names]
        dots = sum(gi @ t.flatten() for gi, t in zip(grads, target))
        norms = torch.sqrt(sum(gi.pow(2).sum(1) for gi in grads))
        losses.append(1 - dots / (t_norm * norms).clamp_min(1e-30))
    return torch.cat(losses)


def _param_names(model: nn.Module, params: Iterable[Tensor]) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    try:
        return [by_id[id(p)] for p in params]
    except KeyError as err:
        raise ValueError("every crafting parameter must be a parameter of the model") from err
