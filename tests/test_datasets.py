"""Tests for recognition.datasets on the real CIFAR-10 JPEG tarball and small ImageFolder trees."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recognition.datasets import ImageTensorDataset, default_data_dir, load_cifar10, load_image_folder

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Members read straight from the tarball to check what the loader returns.
RAW_MEMBERS = ["test/airplane/0000.jpg", "test/automobile/0000.jpg", "train/cat/0000.jpg", "train/cat/0019.jpg"] + [
    f"train/{name}/{i:04d}.jpg" for name in ("bird", "frog") for i in range(3)
]


@pytest.fixture(scope="module")
def raw(cifar_tar: Path) -> dict[str, bytes]:
    """Original JPEG bytes of RAW_MEMBERS."""
    with tarfile.open(cifar_tar) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.name in RAW_MEMBERS}


@pytest.fixture(scope="module")
def cifar_test(cifar_tar: Path) -> ImageTensorDataset:
    return load_cifar10(cifar_tar, "test", seed=None)


def _pixels(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)


def test_cifar_test_split_from_tarball(cifar_test: ImageTensorDataset, raw: dict[str, bytes]) -> None:
    assert cifar_test.classes == CIFAR_CLASSES
    assert cifar_test.images.shape == (10000, 3, 32, 32) and cifar_test.images.dtype == torch.uint8
    assert cifar_test.labels.dtype == torch.int64
    assert cifar_test.labels.bincount().tolist() == [1000] * 10
    # seed=None keeps class-grouped file order: index 1000 is the first automobile.
    assert torch.equal(cifar_test.images[0], _pixels(raw["test/airplane/0000.jpg"]))
    assert torch.equal(cifar_test.images[1000], _pixels(raw["test/automobile/0000.jpg"]))
    assert cifar_test.labels[999] == 0 and cifar_test.labels[1000] == 1
    image, label = cifar_test[1000]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and label == 1
    assert 0.0 <= image.min() and image.max() <= 1.0


def _pairs(dataset: ImageTensorDataset) -> list[tuple[bytes, int]]:
    return sorted((image.numpy().tobytes(), int(label)) for image, label in zip(dataset.images, dataset.labels))


def test_per_class_subset_is_first_files_and_deterministic(cifar_tar: Path, raw: dict[str, bytes]) -> None:
    grouped = load_cifar10(cifar_tar, "train", per_class=20, seed=None)
    shuffled = load_cifar10(cifar_tar, "train", per_class=20, seed=0)
    assert len(grouped) == 200 and grouped.labels.bincount().tolist() == [20] * 10
    cat = CIFAR_CLASSES.index("cat")
    assert torch.equal(grouped.images[cat * 20], _pixels(raw["train/cat/0000.jpg"]))
    assert torch.equal(grouped.images[cat * 20 + 19], _pixels(raw["train/cat/0019.jpg"]))
    # The seeded order is a permutation of the same (image, label) pairs, and fixed by the seed.
    assert not torch.equal(shuffled.labels, grouped.labels)
    assert _pairs(shuffled) == _pairs(grouped)
    again = load_cifar10(cifar_tar, "train", per_class=20, seed=0)
    assert torch.equal(again.images, shuffled.images) and torch.equal(again.labels, shuffled.labels)
    # the split is decoded once per process, and each call gets its own copy
    again.images.zero_()
    assert torch.equal(load_cifar10(cifar_tar, "train", per_class=20, seed=0).images, shuffled.images)


def test_a_changed_tarball_is_read_again(tmp_path: Path, raw: dict[str, bytes]) -> None:
    def write(names: list[str]) -> None:
        with tarfile.open(archive, "w:gz") as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = len(raw[name])
                tar.addfile(info, io.BytesIO(raw[name]))

    archive = tmp_path / "cifar.tar.gz"
    write(["train/cat/0000.jpg"])
    assert load_cifar10(archive, "train").classes == ["cat"]
    write(["train/cat/0000.jpg", "train/frog/0000.jpg"])
    assert load_cifar10(archive, "train").classes == ["cat", "frog"]


def test_cifar_from_extracted_folder_and_image_folder(tmp_path: Path, raw: dict[str, bytes]) -> None:
    for name, data in raw.items():
        if name.startswith("train/") and "/cat/" not in name:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(data)
    from_folder = load_cifar10(tmp_path, "train", per_class=2, seed=None)
    assert from_folder.classes == ["bird", "frog"] and from_folder.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(from_folder.images[2], _pixels(raw["train/frog/0000.jpg"]))
    tree = load_image_folder(tmp_path / "train")
    assert tree.classes == ["bird", "frog"] and len(tree) == 6
    assert torch.equal(tree.images[:2], from_folder.images[:2])


def _write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path)


def test_image_folder_formats_resizing_and_errors(tmp_path: Path) -> None:
    _write_image(tmp_path / "alice" / "a.JPG", (40, 30), (200, 10, 10))
    _write_image(tmp_path / "alice" / "b.png", (30, 50), (10, 200, 10), mode="L")
    _write_image(tmp_path / "bob" / "c.jpeg", (64, 64), (10, 10, 200))
    (tmp_path / "bob" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="different sizes"):
        load_image_folder(tmp_path)
    dataset = load_image_folder(tmp_path, size=16)
    assert dataset.classes == ["alice", "bob"] and dataset.labels.tolist() == [0, 0, 1]
    assert dataset.images.shape == (3, 3, 16, 16)
    assert dataset.images[1].float().std(0).max() == 0  # grayscale PNG became RGB with equal channels
    (tmp_path / "bob" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image_folder(tmp_path, size=16)


@pytest.mark.parametrize("bad_name", ["../evil.jpg", "/abs/evil.jpg", "train/../../evil.jpg"])
def test_tarball_with_unsafe_member_names_is_rejected(tmp_path: Path, bad_name: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    payload = io.BytesIO()
    Image.new("RGB", (32, 32)).save(payload, format="JPEG")
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(bad_name)
        info.size = len(payload.getvalue())
        tar.addfile(info, io.BytesIO(payload.getvalue()))
    with pytest.raises(ValueError, match="unsafe member"):
        load_cifar10(archive, "train")


def test_dataset_validation_and_subset() -> None:
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).view(4, 3, 2, 2)
    dataset = ImageTensorDataset(images, torch.tensor([0, 1, 1, 0]), ["x", "y"])
    part = dataset.subset([3, 1])
    assert part.classes == ["x", "y"] and part.labels.tolist() == [0, 1]
    assert torch.equal(part.images, images[[3, 1]])
    with pytest.raises(ValueError):
        ImageTensorDataset(images.float(), dataset.labels, ["x", "y"])
    with pytest.raises(ValueError):
        ImageTensorDataset(images, torch.tensor([0, 1, 2, 0]), ["x", "y"])
    with pytest.raises(ValueError):
        load_cifar10(Path("unused"), "validation")


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEGUARD_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("FACEGUARD_DATA")
    assert default_data_dir() == Path(__file__).resolve().parents[1].parent / "shared" / "data"
