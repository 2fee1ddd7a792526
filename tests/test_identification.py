"""Leave-one-out kNN identification: scikit-learn neighbours against a brute-force computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recognition.identification import gallery_identification, knn_identification


def brute_force_topk(embeddings: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of probes (with a genuine match) whose k most cosine-similar other images include
    one of the same label: full similarity matrix, the probe itself masked out."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    hits = (labels[nearest] == labels[:, None]).any(axis=1)
    usable = np.array([(labels == label).sum() > 1 for label in labels])
    return 100.0 * hits[usable].mean()


def test_matches_brute_force_on_noisy_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 16))
    labels = rng.integers(0, 12, size=300)
    embeddings = centres[labels] + 1.3 * rng.normal(size=(300, 16))  # overlapping: accuracy well below 100
    result = knn_identification(torch.from_numpy(embeddings).float(), torch.from_numpy(labels))
    for k in (1, 5):
        assert result.accuracy[k] == pytest.approx(brute_force_topk(embeddings.astype(np.float32), labels, k), abs=1e-9)
    assert 20 < result.accuracy[1] < result.accuracy[5] < 100
    assert result.metrics() == {"top1": result.accuracy[1], "top5": result.accuracy[5]}


def test_leave_one_out_excludes_the_probe_and_counts_singletons() -> None:
    # Identical duplicates of one person: the probe must not match itself but its twin does match.
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.2]])
    labels = np.array([0, 0, 1, 2, 1])  # identity 2 has a single image
    result = knn_identification(embeddings, labels, ks=(1,))
    assert result.singletons == 1 and result.probes == 4
    # probes 0 and 1 find their twin, probe 4 finds image 2; probe 2's nearest is person 2 (wrong)
    assert result.accuracy[1] == pytest.approx(75.0)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be"):
        knn_identification(np.eye(3), [0, 0, 1], ks=(5,))
    with pytest.raises(ValueError, match="non-zero"):
        knn_identification(np.zeros((4, 2)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="no identity"):
        knn_identification(np.eye(3), [0, 1, 2], ks=(1,))


def test_gallery_identification_matches_brute_force_and_skips_unmatched_probes() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 16))
    labels = rng.integers(0, 8, size=200)
    embeddings = centres[labels] + 1.2 * rng.normal(size=(200, 16))
    gallery = rng.random(200) < 0.3
    gallery[labels == 7] = False  # identity 7 has no gallery image: its probes cannot be identified
    result = gallery_identification(embeddings, labels, gallery)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    probes = ~gallery & (labels != 7)
    similarity = unit[probes] @ unit[gallery].T
    nearest = np.argsort(-similarity, axis=1, kind="stable")
    for k in (1, 5):
        expected = 100.0 * (labels[gallery][nearest[:, :k]] == labels[probes][:, None]).any(axis=1).mean()
        assert result.accuracy[k] == pytest.approx(expected, abs=5e-5)  # reported to 4 decimals
    assert result.probes == probes.sum() and result.singletons == (labels == 7).sum()
    assert 10 < result.accuracy[1] < result.accuracy[5] < 100


def test_gallery_identification_refuses_what_cannot_be_measured() -> None:
    embeddings, labels = np.eye(4) + 0.1, np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="every k"):
        gallery_identification(embeddings, labels, [True, False, True, False], ks=(3,))
    with pytest.raises(ValueError, match="no probe"):
        gallery_identification(embeddings, labels, [True, True, False, False], ks=(1,))
    with pytest.raises(ValueError, match="mask"):
        gallery_identification(embeddings, labels, [True, False], ks=(1,))
