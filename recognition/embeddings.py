"""Face embeddings from a trained backbone: L2-normalised vectors compared by cosine similarity.

Identification and verification compare embeddings, not class logits, so the same backbone
works for identities it never saw in training. Embeddings are taken in eval mode without
gradients and returned on the CPU (so large galleries do not occupy accelerator memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from recognition.datasets import ImageTensorDataset, load_image_folder
from recognition.distributed import evaluating


@torch.no_grad()
def extract_embeddings(
    backbone: nn.Module,
    images: Dataset | torch.Tensor,
    batch_size: int = 128,
    flip: bool = False,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """L2-normalised embeddings [N, D] (float32, CPU) of every image, in order.

    ``images`` is a Dataset of (image, label) items with float images in [0, 1], or an image
    tensor [N, C, H, W]: uint8 (0..255) or float in [0, 1]. With ``flip`` ("flip fusion", as in
    insightface evaluation) the raw embeddings of the image and of its horizontal mirror are
    summed before normalising, which makes the embedding invariant to mirroring.
    ``device=None`` runs where the backbone's parameters are; otherwise the backbone is moved
    to ``device`` (and left there). The backbone's train/eval mode is restored afterwards.
    """
    with evaluating(backbone, device) as device:
        chunks = []
        for batch in _image_batches(images, batch_size):
            batch = batch.to(device)
            batch = batch.float().div(255) if batch.dtype == torch.uint8 else batch.float()
            embedding = backbone(batch)
            if flip:
                embedding = embedding + backbone(batch.flip(-1))
            chunks.append(F.normalize(embedding, dim=1).float().cpu())
    if not chunks:
        raise ValueError("no images to embed")
    return torch.cat(chunks)


def embed_folder(
    backbone: nn.Module, root: str | Path, size: int, **kwargs
) -> tuple[torch.Tensor, ImageTensorDataset]:
    """Embed every image of an ImageFolder tree (``root/<identity>/<image>``).

    Images are loaded as RGB, resized (shorter side ``size``) and centre-cropped to
    ``size`` x ``size`` by ``load_image_folder``; ``kwargs`` (``batch_size``, ``flip``, ``device``)
    go to ``extract_embeddings``. Returns the embeddings and the dataset, whose ``labels`` and
    ``classes`` say whose face each row is.
    """
    dataset = load_image_folder(root, size=size)
    return extract_embeddings(backbone, dataset.images, **kwargs), dataset


def _image_batches(images: Dataset | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield image batches; in-memory datasets are sliced directly (no per-item decoding)."""
    if isinstance(images, ImageTensorDataset):
        images = images.images
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        yield from images.split(batch_size)
    else:
        for batch, _ in DataLoader(images, batch_size=batch_size, shuffle=False):
            yield batch
