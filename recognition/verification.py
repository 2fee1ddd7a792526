"""Face verification: is this pair of faces the same person? 10-fold accuracy, ROC AUC, TAR@FAR.

Protocol (LFW / insightface): the backbone (head removed) embeds both images of every pair; the
score of a pair is the cosine similarity of the two L2-normalised embeddings (optionally with
flip fusion: each embedding is that of the image plus that of its mirror image, see
``recognition.embeddings.extract_embeddings``). The pairs are cut into 10 consecutive folds
(scikit-learn ``KFold(10)``, unshuffled, as insightface does); for each fold the decision threshold
``score >= t`` that maximises accuracy on the other 9 folds is applied to the held-out fold, and
the reported accuracy is the mean over the 10 folds. Candidate thresholds lie halfway between
consecutive scores of the 9 training folds (the exact optimum, rather than insightface's fixed
0.01 grid); ties go to the lowest. Extras over all pairs: ROC AUC and TAR at FAR = 1e-3 (the
highest true-accept rate whose false-accept rate is at most 1e-3; with fewer than 1,000
different-person pairs this is TAR at zero false accepts).

Pair sets come from insightface ``.bin`` files or pairs lists (``recognition.verification_bin``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold
from torch import nn

from recognition.embeddings import extract_embeddings
from recognition.verification_bin import PairSet

FOLDS = 10
FAR = 1e-3


@dataclass
class VerificationResult:
    """Mean 10-fold accuracy (percent) and its std over folds, the mean threshold, AUC, TAR@FAR."""

    accuracy: float
    accuracy_std: float
    threshold: float
    auc: float
    tar_at_far: float

    def metrics(self, name: str) -> dict[str, float]:
        """Results-file metrics: ``{name}`` (accuracy %), ``{name}_auc`` and ``{name}_tar`` (%)."""
        return {name: round(self.accuracy, 4), f"{name}_auc": round(100 * self.auc, 4),
                f"{name}_tar": round(100 * self.tar_at_far, 4)}


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising the accuracy of ``score >= threshold`` ⇔ same person.

    Candidates are the midpoints between consecutive distinct scores (each split of the sorted
    scores, with the widest margin to both sides) and ±inf; exact, O(n log n).
    """
    distinct = np.unique(scores)
    candidates = np.concatenate([[-np.inf], (distinct[:-1] + distinct[1:]) / 2, [np.inf]])
    positives, negatives = np.sort(scores[issame]), np.sort(scores[~issame])
    accepted = len(positives) - np.searchsorted(positives, candidates, side="left")
    rejected = np.searchsorted(negatives, candidates, side="left")
    correct = accepted + rejected
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best]) / len(scores)


def verification_metrics(scores: np.ndarray | torch.Tensor, issame: np.ndarray, folds: int = FOLDS,
                         far: float = FAR) -> VerificationResult:
    """10-fold accuracy (thresholds chosen on the other folds), ROC AUC and TAR@FAR of pair scores."""
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if scores.shape != issame.shape or scores.ndim != 1:
        raise ValueError(f"need one score per pair, got {scores.shape} scores for {issame.shape} pairs")
    if len(scores) < folds:
        raise ValueError(f"{len(scores)} pairs cannot be split into {folds} folds")
    if issame.all() or not issame.any():
        raise ValueError("verification needs both same-person and different-person pairs")
    accuracies, thresholds = [], []
    for train, test in KFold(n_splits=folds, shuffle=False).split(scores):
        threshold, _ = best_threshold(scores[train], issame[train])
        accuracies.append(float(np.mean((scores[test] >= threshold) == issame[test])))
        thresholds.append(threshold)
    fpr, tpr, _ = roc_curve(issame, scores)
    finite = [t for t in thresholds if np.isfinite(t)]
    return VerificationResult(
        accuracy=100 * float(np.mean(accuracies)), accuracy_std=100 * float(np.std(accuracies)),
        threshold=float(np.mean(finite)) if finite else float("inf"),
        auc=float(roc_auc_score(issame, scores)), tar_at_far=float(tpr[fpr <= far].max()))


def pair_scores(embeddings: torch.Tensor) -> np.ndarray:
    """Cosine similarity of rows 2i and 2i+1 of L2-normalised embeddings [2P, D] -> [P]."""
    if embeddings.dim() != 2 or embeddings.shape[0] % 2:
        raise ValueError(f"need embeddings [2P, D], got {tuple(embeddings.shape)}")
    return (embeddings[0::2] * embeddings[1::2]).sum(1).double().numpy()


def evaluate_pair_set(backbone: nn.Module, pairs: PairSet, size: int, channels: int = 3, flip: bool = False,
                      batch_size: int = 128, device: str | torch.device | None = None,
                      images: np.ndarray | None = None) -> VerificationResult:
    """Verification metrics of ``backbone`` on a pair set, images fitted to ``size`` x ``size``.

    ``images`` may pass ``pairs.decode(size, channels)`` decoded once, to evaluate many models.
    """
    decoded = pairs.decode(size, channels) if images is None else images
    embeddings = extract_embeddings(backbone, torch.from_numpy(decoded), batch_size=batch_size, flip=flip,
                                    device=device)
    return verification_metrics(pair_scores(embeddings), pairs.issame)
