"""Tests for the face datasets: the bundle's Yale B / ORL arrays, the identity split protocol and
CelebA annotation parsing (on a small synthetic CelebA tree, never real CelebA data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_data
from PIL import Image

from recognition.datasets import ImageTensorDataset
from recognition.face_datasets import (
    CELEBA_MIN_IMAGES,
    load_celeba_identities,
    load_npz_faces,
    select_identities,
    split_identities,
)


@pytest.fixture(scope="module")
def yaleb_path() -> Path:
    return require_data("yaleb_cropped.npz")


@pytest.fixture(scope="module")
def yaleb(yaleb_path: Path) -> ImageTensorDataset:
    return load_npz_faces(yaleb_path)


def test_yaleb_loads_as_grayscale_identities(yaleb: ImageTensorDataset) -> None:
    assert yaleb.images.shape == (2414, 1, 192, 168) and yaleb.images.dtype == torch.uint8
    assert yaleb.classes[0] == "yaleB01" and yaleb.classes[13] == "yaleB15" and len(yaleb.classes) == 38
    assert torch.bincount(yaleb.labels).min() == 59


def test_yaleb_resize_and_three_channels(yaleb_path: Path, yaleb: ImageTensorDataset) -> None:
    small = load_npz_faces(yaleb_path, size=64, channels=3)
    assert small.images.shape == (2414, 3, 64, 64)
    assert torch.equal(small.images[:, 0], small.images[:, 2])  # gray replicated
    assert torch.equal(small.labels, yaleb.labels) and small.classes == yaleb.classes
    # A resize, not garbage: mean brightness of the centre square is kept within 2 grey levels.
    centre = yaleb.images[:, 0, 12:180].float().mean(dim=(1, 2))
    assert (small.images[:, 0].float().mean(dim=(1, 2)) - centre).abs().max() < 2


def test_orl_loads() -> None:
    faces = load_npz_faces(require_data("orl_faces.npz"), size=32)
    assert faces.images.shape == (390, 1, 32, 32)
    assert faces.classes[:2] == ["s1", "s2"] and len(faces.classes) == 39
    assert torch.equal(torch.bincount(faces.labels), torch.full((39,), 10))


def test_split_yaleb_into_28_pretraining_and_10_test_identities(yaleb: ImageTensorDataset) -> None:
    split = split_identities(yaleb.labels, num_test=10, seed=0)
    assert len(split.pretrain) == 28 and len(split.test) == 10 and len(split.dropped) == 0
    pretrain = select_identities(yaleb, split.pretrain)
    assert pretrain.labels.max() == 27 and len(pretrain.classes) == 28
    assert pretrain.classes == [yaleb.classes[i] for i in split.pretrain]
    assert len(pretrain) == int(torch.isin(yaleb.labels, torch.as_tensor(split.pretrain)).sum())


def _toy_labels() -> np.ndarray:
    """Identity i has i + 1 images, for identities 0..29 (so 0 and 1 have fewer than 3)."""
    return np.repeat(np.arange(30), np.arange(1, 31))


def test_split_identities_filters_and_is_disjoint() -> None:
    labels = _toy_labels()
    split = split_identities(labels, min_images=3, num_test=8, seed=1)
    assert split.dropped.tolist() == [0, 1]
    assert len(split.test) == 8 and len(split.pretrain) == 20
    assert not set(split.test) & set(split.pretrain)
    assert sorted([*split.test, *split.pretrain]) == list(range(2, 30))
    assert CELEBA_MIN_IMAGES == 3


def test_split_identities_is_deterministic_and_order_free() -> None:
    labels = _toy_labels()
    first = split_identities(labels, num_test=8, seed=1)
    shuffled = np.random.default_rng(5).permutation(labels)
    counts = dict(zip(*np.unique(labels, return_counts=True)))
    for again in (split_identities(labels, num_test=8, seed=1), split_identities(shuffled, num_test=8, seed=1),
                  split_identities(torch.as_tensor(labels), num_test=8, seed=1),
                  split_identities(counts, num_test=8, seed=1)):
        assert np.array_equal(again.test, first.test) and np.array_equal(again.pretrain, first.pretrain)
    assert not np.array_equal(split_identities(labels, num_test=8, seed=2).test, first.test)


def test_split_identities_rejects_too_many_test_identities() -> None:
    with pytest.raises(ValueError, match="num_test"):
        split_identities(_toy_labels(), min_images=3, num_test=29)


def _write_celeba(root: Path, identities: list[int]) -> list[str]:
    """A tiny CelebA tree: identity file, aligned landmarks and 10x12 RGB JPEGs."""
    files = [f"{i + 1:06d}.jpg" for i in range(len(identities))]
    image_dir = root / "img_align_celeba"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in files:
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(image_dir / name)
    (root / "identity_CelebA.txt").write_text("".join(f"{f} {i}\n" for f, i in zip(files, identities)))
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    rows = [f"{f} " + " ".join(str(k * 10 + j) for j in range(10)) for k, f in enumerate(files)]
    (root / "list_landmarks_align_celeba.txt").write_text(f"{len(files)}\n{header}\n" + "\n".join(rows) + "\n")
    return files


def test_celeba_identities_landmarks_and_images(tmp_path: Path) -> None:
    identities = [2880, 2937, 2880, 12, 2937, 2880, 7]
    files = _write_celeba(tmp_path, identities)
    celeba = load_celeba_identities(tmp_path, landmarks=True)
    assert celeba.files == files and celeba.identities.tolist() == identities
    assert celeba.landmarks.shape == (7, 5, 2)
    assert celeba.landmarks[1].tolist() == [[10, 11], [12, 13], [14, 15], [16, 17], [18, 19]]
    assert load_celeba_identities(tmp_path).landmarks is None

    split = split_identities(celeba.identities, min_images=2, num_test=1, seed=0)
    assert split.dropped.tolist() == [7, 12] and sorted([*split.pretrain, *split.test]) == [2880, 2937]

    images = celeba.load_images(np.flatnonzero(np.isin(celeba.identities, [2880, 12])), size=8)
    assert images.images.shape == (4, 3, 8, 8)
    assert images.classes == ["12", "2880"] and images.labels.tolist() == [1, 1, 0, 1]
    assert celeba.load_images().images.shape == (7, 3, 12, 10)


def test_celeba_official_layout_and_errors(tmp_path: Path) -> None:
    _write_celeba(tmp_path / "Img", [1, 2])
    (tmp_path / "Anno").mkdir()
    for name in ("identity_CelebA.txt", "list_landmarks_align_celeba.txt"):
        (tmp_path / "Img" / name).rename(tmp_path / "Anno" / name)
    celeba = load_celeba_identities(tmp_path, landmarks=True)
    assert celeba.image_dir == tmp_path / "Img" / "img_align_celeba"
    assert len(celeba.load_images()) == 2

    (tmp_path / "Anno" / "identity_CelebA.txt").write_text("000001.jpg 1\n000002.jpg two\n")
    with pytest.raises(ValueError, match="line 2"):
        load_celeba_identities(tmp_path)
    (tmp_path / "Anno" / "identity_CelebA.txt").write_text("../../secret.jpg 1\n")
    with pytest.raises(ValueError, match="line 1"):
        load_celeba_identities(tmp_path)
    with pytest.raises(FileNotFoundError, match="identity_CelebA.txt"):
        load_celeba_identities(tmp_path / "nowhere")


def test_yaleb_light_angles_read_azimuth_and_elevation_from_file_names() -> None:
    from recognition.face_datasets import yaleb_light_angles

    angles = yaleb_light_angles(["yaleB01_P00A+000E+00.pgm", "yaleB02_P00A-035E+15.pgm", "yaleB03_P00A+130E+20.pgm"])
    expected = np.degrees(np.arccos([1.0, np.cos(np.radians(35)) * np.cos(np.radians(15)),
                                     np.cos(np.radians(130)) * np.cos(np.radians(20))]))
    np.testing.assert_allclose(angles, expected, atol=1e-9)
    with pytest.raises(ValueError, match="yaleB01_Ambient.pgm"):
        yaleb_light_angles(["yaleB01_Ambient.pgm"])

