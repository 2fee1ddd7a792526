"""Who is who in a photo folder: identity keys per photo and per-identity embedding centres.

``--identities folders``: ``PHOTOS/<person>/…`` sub-folders are people; photos directly in PHOTOS
are unlabelled, so each of their faces is its own centre. ``single``: every face is one person
(named after PHOTOS). ``cluster``: faces are grouped into pseudo-identities by their surrogate
embeddings with scikit-learn's agglomerative clustering (average linkage, cosine distance below a
threshold), and the groups are reported. A person's head row is the mean of their faces'
normalised embeddings; centres already used for a folder are kept in the manifest, so a resumed
run protects the rest of that person's photos toward the same centre. :func:`assign_names` names
the faces of one identity group and records its centres; under torchrun
:func:`share_embeddings` first gives every process the embeddings of the photos the others detected.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from recognition.distributed import DistributedContext, all_reduce_sum

if TYPE_CHECKING:
    from faceguard.protect.manifest import Manifest
    from faceguard.protect.protector import Protector

IDENTITY_MODES = ("folders", "single", "cluster")
CLUSTER_DISTANCE = 0.5  # cosine distance; below it faces join one pseudo-identity


def identity_key(rel: Path, mode: str, root_name: str) -> str | None:
    """The person a photo's faces belong to before clustering (None: each face on its own)."""
    if mode == "single":
        return root_name
    if mode == "folders":
        return rel.parts[0] if len(rel.parts) > 1 else None
    return None


def mean_centres(names: list[str | None], embeddings: torch.Tensor,
                 known: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    """Unit mean embedding per named identity; a centre in ``known`` (the manifest) wins."""
    centres: dict[str, torch.Tensor] = {}
    for name in sorted({n for n in names if n is not None}):
        if name in known:
            centres[name] = torch.tensor(known[name], dtype=torch.float32)
        else:
            rows = embeddings[[i for i, n in enumerate(names) if n == name]]
            centres[name] = F.normalize(rows.mean(0), dim=0)
    return centres


def cluster_names(embeddings: torch.Tensor, known: dict[str, list[float]],
                  threshold: float = CLUSTER_DISTANCE) -> list[str]:
    """A pseudo-identity name per face: an existing cluster whose centre is within ``threshold``
    (cosine distance), else a new ``person-NN`` from agglomerative clustering of the rest."""
    from sklearn.cluster import AgglomerativeClustering

    names: list[str | None] = [None] * len(embeddings)
    if known:
        centres = torch.tensor(list(known.values()), dtype=torch.float32)
        distance = 1 - embeddings @ F.normalize(centres, dim=1).T
        best = distance.min(1)
        for i, (value, index) in enumerate(zip(best.values, best.indices)):
            if float(value) < threshold:
                names[i] = list(known)[int(index)]
    rest = [i for i, name in enumerate(names) if name is None]
    taken = len(known)
    if len(rest) == 1:
        names[rest[0]] = f"person-{taken + 1:02d}"
    elif rest:
        labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                         distance_threshold=threshold).fit_predict(embeddings[rest].numpy())
        # number clusters by first appearance, so names follow the photo order
        order = {label: k for k, label in enumerate(dict.fromkeys(labels.tolist()))}
        for i, label in zip(rest, labels):
            names[i] = f"person-{taken + order[label] + 1:02d}"
    return [str(name) for name in names]


def centre_lists(centres: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Centres as JSON-able lists (6 decimals) for the manifest."""
    return {name: np.round(centre.numpy().astype(np.float64), 6).tolist() for name, centre in centres.items()}


def share_embeddings(group: list[str], detected: dict[str, tuple], width: int,
                     context: DistributedContext) -> dict[str, tuple]:
    """Every photo of ``group`` (in its order) with its faces' ``width``-d (CPU) embeddings, from
    the photos each process detected: (faces, embeddings) for this process's photos,
    ([None] * n, embeddings) for the others', none for photos that failed. Two sums over the
    processes, to which only the photo's own process adds anything but zeros, so the embeddings
    arrive bit for bit and names and centres come out as in one process."""
    counts = torch.tensor([len(detected[rel][0]) + 1 if rel in detected else 0 for rel in group])
    counts = all_reduce_sum(counts, context).tolist()  # faces + 1 per photo, 0: not detected
    stacked = torch.zeros(len(group), max([c - 1 for c in counts] + [0]), width)
    for i, rel in enumerate(group):
        if rel in detected and counts[i] > 1:
            stacked[i, :counts[i] - 1] = detected[rel][1]
    stacked = all_reduce_sum(stacked, context)
    shared = {}
    for i, (rel, count) in enumerate(zip(group, counts)):
        if count:
            faces = detected[rel][0] if rel in detected else [None] * (count - 1)
            shared[rel] = (faces, stacked[i, :count - 1])
    return shared


def assign_names(detected: dict[str, tuple], key: str | None, mode: str, manifest: Manifest,
                 protector: Protector) -> dict[str, list[str | None]]:
    """Identity name per face of each detected photo; updates centres (and clusters) in the manifest."""
    rels = [rel for rel, (faces, _) in detected.items() for _ in faces]
    embeddings = [e for _, (faces, e) in detected.items() if faces]
    if not rels:
        return {rel: [] for rel in detected}
    stacked = torch.cat(embeddings)
    record: dict[str, dict] = {}
    if mode == "cluster":
        flat = cluster_names(stacked, manifest.centres)
        record["clusters"] = {}
        for rel, name in zip(rels, flat):
            record["clusters"].setdefault(name, []).append(rel)
    else:
        flat = [key] * len(rels)
    centres = mean_centres(flat, stacked, manifest.centres)
    protector.centres.update(centres)
    record["centres"] = {n: c for n, c in centre_lists(centres).items() if n not in manifest.centres}
    if any(record.values()):
        manifest.add(record)
    names, position = {}, 0
    for rel, (faces, _) in detected.items():
        names[rel] = flat[position:position + len(faces)]
        position += len(faces)
    return names
