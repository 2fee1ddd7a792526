"""Closed-set kNN identification on face embeddings: leave-one-out top-1 / top-5 accuracy.

Protocol (the paper's CelebA identification, Table 7): a backbone trained on the pre-training
identities, with its classification head removed, embeds every image of the *test* identities
(people it never saw). Each test image in turn is the probe and every *other* test image is the
gallery (leave-one-out): the probe counts as identified at rank k when one of its k nearest
gallery images, by cosine similarity of the L2-normalised embeddings, shows the same person.
Top-1 is the 1-NN accuracy; top-5 asks whether any of the 5 nearest neighbours matches. Ties in
distance are broken by scikit-learn's neighbour order. Probes whose identity has no other image
cannot be identified at all; they are excluded and counted (``singletons``), so accuracy is over
the probes that have at least one genuine match in the gallery.

:func:`gallery_identification` is the harder closed-set protocol with a fixed gallery (e.g. Extended
Yale B's frontally lit "subset 1" as the gallery, every other lighting as probes): near-duplicate
neighbours (the same face under the next lighting direction) no longer make identification easy,
so it measures what the embedding learned rather than how similar adjacent images are.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors


@dataclass
class IdentificationResult:
    """Top-k accuracies (percent, keyed by k), the number of probes used and of singletons."""

    accuracy: dict[int, float]
    probes: int
    singletons: int

    def metrics(self) -> dict[str, float]:
        """``{"top1": ..., "top5": ...}``: the accuracies under the results-file metric names."""
        return {f"top{k}": value for k, value in self.accuracy.items()}


def _points_and_labels(embeddings: torch.Tensor | np.ndarray,
                       labels: torch.Tensor | np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """float64 [N, D] embeddings and [N] labels as numpy, checked for shape and usable norms."""
    points = np.asarray(embeddings.detach().cpu() if isinstance(embeddings, torch.Tensor) else embeddings,
                        dtype=np.float64)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if points.ndim != 2 or labels.shape != (points.shape[0],):
        raise ValueError(f"need embeddings [N, D] and labels [N], got {points.shape} and {labels.shape}")
    if not np.isfinite(points).all() or (np.linalg.norm(points, axis=1) == 0).any():
        raise ValueError("embeddings must be finite and non-zero for cosine similarity")
    return points, labels


def _checked_ks(ks: Sequence[int], limit: int) -> list[int]:
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1 or ks[-1] > limit:
        raise ValueError(f"every k must be in 1..{limit}, got {ks}")
    return ks


def knn_identification(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = (1, 5),
) -> IdentificationResult:
    """Leave-one-out top-k identification accuracy of ``embeddings`` [N, D] with ``labels`` [N].

    Cosine distance with scikit-learn's exact ``NearestNeighbors``; every image is a probe
    against all the others (see the module docstring). ``ks`` must be positive and smaller than
    N. Embeddings need not be normalised (cosine ignores the norm) but must be finite and
    non-zero.
    """
    points, labels = _points_and_labels(embeddings, labels)
    ks = _checked_ks(ks, len(points) - 1)
    search = NearestNeighbors(n_neighbors=ks[-1], metric="cosine", algorithm="brute").fit(points)
    # Query without X: scikit-learn then leaves each point out of its own neighbours (exactly
    # leave-one-out, even when another image has an identical embedding).
    _, neighbours = search.kneighbors()
    hits = labels[neighbours] == labels[:, None]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    usable = counts[inverse] > 1
    if not usable.any():
        raise ValueError("no identity has two images: nothing can be identified")
    accuracy = {k: round(100.0 * float(hits[usable, :k].any(axis=1).mean()), 4) for k in ks}
    return IdentificationResult(accuracy, int(usable.sum()), int((~usable).sum()))


def gallery_identification(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    gallery: torch.Tensor | np.ndarray | Sequence[bool],
    ks: Sequence[int] = (1, 5),
) -> IdentificationResult:
    """Top-k identification of the probes (images outside ``gallery``, a boolean mask [N]) against
    the gallery images, by cosine similarity as :func:`knn_identification`.

    Probes whose identity has no gallery image cannot be identified; they are excluded and counted
    in ``singletons``. Every k must be at most the gallery's size.
    """
    points, labels = _points_and_labels(embeddings, labels)
    gallery = np.asarray(gallery.cpu() if isinstance(gallery, torch.Tensor) else gallery, dtype=bool)
    if gallery.shape != labels.shape:
        raise ValueError(f"need a gallery mask [N] = [{len(labels)}], got {gallery.shape}")
    ks = _checked_ks(ks, int(gallery.sum()))
    probes = ~gallery & np.isin(labels, labels[gallery])
    if not probes.any():
        raise ValueError("no probe shares an identity with the gallery: nothing can be identified")
    search = NearestNeighbors(n_neighbors=ks[-1], metric="cosine", algorithm="brute").fit(points[gallery])
    _, neighbours = search.kneighbors(points[probes])
    hits = labels[gallery][neighbours] == labels[probes][:, None]
    accuracy = {k: round(100.0 * float(hits[:, :k].any(axis=1).mean()), 4) for k in ks}
    return IdentificationResult(accuracy, int(probes.sum()), int((~gallery & ~probes).sum()))
