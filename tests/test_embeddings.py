"""Tests for embedding extraction: normalisation, flip fusion, determinism and input forms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import TensorDataset

from recognition.datasets import ImageTensorDataset
from recognition.embeddings import embed_folder, extract_embeddings
from recognition.models import create_model


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("ir18", num_classes=32, width=0.0625, input_size=32)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_embeddings_are_unit_norm_and_restore_mode(backbone, images) -> None:
    backbone.train()
    embeddings = extract_embeddings(backbone, images, batch_size=4)
    assert embeddings.shape == (10, 32) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(10), atol=1e-5)
    assert backbone.training


def test_flip_fusion_is_the_normalised_sum(backbone, images) -> None:
    x = images.float() / 255
    with torch.no_grad():
        backbone.eval()
        expected = F.normalize(backbone(x) + backbone(x.flip(-1)), dim=1)
    fused = extract_embeddings(backbone, images, flip=True)
    assert torch.allclose(fused, expected, atol=1e-5)
    assert not torch.allclose(fused, extract_embeddings(backbone, images), atol=1e-3)
    # Mirroring the input leaves the fused embedding unchanged.
    assert torch.allclose(extract_embeddings(backbone, images.flip(-1), flip=True), fused, atol=1e-5)


def test_deterministic_across_calls_batch_sizes_and_input_forms(backbone, images) -> None:
    reference = extract_embeddings(backbone, images)
    labels = torch.zeros(10, dtype=torch.int64)
    for again in (
        extract_embeddings(backbone, images),
        extract_embeddings(backbone, images, batch_size=3),
        extract_embeddings(backbone, images.float() / 255),
        extract_embeddings(backbone, ImageTensorDataset(images, labels, ["a"])),
        extract_embeddings(backbone, TensorDataset(images.float() / 255, labels), batch_size=4),
        extract_embeddings(backbone, images, device="cpu"),
    ):
        assert torch.allclose(again, reference, atol=1e-5)


def test_rejects_non_batched_images(backbone) -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        extract_embeddings(backbone, torch.rand(3, 32, 32))


def test_embed_folder(tmp_path: Path, backbone) -> None:
    rng = np.random.default_rng(0)
    for person, count in (("alice", 2), ("bob", 3)):
        (tmp_path / person).mkdir()
        for k in range(count):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / person / f"{k}.png")
    embeddings, dataset = embed_folder(backbone, tmp_path, size=32, flip=True)
    assert embeddings.shape == (5, 32) and dataset.classes == ["alice", "bob"]
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1]
    assert torch.allclose(embeddings, extract_embeddings(backbone, dataset, flip=True), atol=1e-5)
