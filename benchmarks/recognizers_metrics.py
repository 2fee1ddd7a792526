"""What the ``recognizers`` benchmark measures from embeddings and pixels.

- Gallery (threat model 2): the released photos are enrolled; each clean probe photo is matched
  against its own person's enrolled photos (``match_rate``: the fraction of probes within the
  recognizer's threshold of at least one of them) and identified by its nearest enrolled photo
  among everyone's (``top1``). A released photo in which no face is found is not enrolled: a person
  with nothing enrolled can be neither matched nor identified.
- Scraper fit (threat model 3): a classifier is fitted on the released photos' embeddings (L2
  normalised) with the person as label and tested on the clean probes: multinomial logistic
  regression (``logreg_top1``) and the cosine nearest class centroid (``centroid_top1``).
- Quality: SSIM and PSNR of each protected file against its original, whole photo (from the
  product's manifest) and face crop (the main face's MTCNN box grown by 20 % of its width and
  height, 10 % on each side).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.recognizers_models import similarity

FACE_GROWTH = 0.2
LOGREG_C = 10.0  # inverse regularisation: unit-norm features need a weak penalty to separate people


def gallery_metrics(gallery: Sequence[np.ndarray | None], gallery_people: Sequence[str],
                    probes: Sequence[np.ndarray], probe_people: Sequence[str], metric: str,
                    thresholds: dict[str, float]) -> dict:
    """``match_rate`` and ``top1`` of the probes against the enrolled gallery (see module doc)."""
    enrolled = [k for k, vector in enumerate(gallery) if vector is not None]
    result = {"probes": len(probes), "enrolled": len(enrolled), "gallery": len(gallery)}
    if not enrolled or not probes:
        return result | {"match_rate": 0.0, "top1": 0.0}
    owners = np.asarray([gallery_people[k] for k in enrolled])
    sims = similarity(np.stack(list(probes)), np.stack([gallery[k] for k in enrolled]), metric)
    matched, identified = [], []
    for row, person in zip(sims, probe_people):
        own = row[owners == person]
        matched.append(own.size > 0 and own.max() >= thresholds[person])
        identified.append(owners[int(np.argmax(row))] == person)
    return result | {"match_rate": float(np.mean(matched)), "top1": float(np.mean(identified))}


def _unit(vectors: Sequence[np.ndarray]) -> np.ndarray:
    stacked = np.stack(list(vectors)).astype(np.float64)
    return stacked / np.linalg.norm(stacked, axis=1, keepdims=True)


def fit_metrics(train: Sequence[np.ndarray | None], train_people: Sequence[str],
                probes: Sequence[np.ndarray], probe_people: Sequence[str], seed: int = 0) -> dict:
    """``logreg_top1`` and ``centroid_top1`` of classifiers fitted on ``train`` (Nones dropped)."""
    kept = [k for k, vector in enumerate(train) if vector is not None]
    result = {"probes": len(probes), "train": len(kept)}
    if not kept or not probes:
        return result | {"logreg_top1": 0.0, "centroid_top1": 0.0}
    x, labels = _unit([train[k] for k in kept]), np.asarray([train_people[k] for k in kept])
    test, truth = _unit(probes), np.asarray(probe_people)
    classes = np.unique(labels)
    if classes.size == 1:
        logreg = np.full(len(truth), classes[0])
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=LOGREG_C, max_iter=5000, random_state=seed).fit(x, labels)
        logreg = model.predict(test)
    centroids = _unit([x[labels == name].mean(axis=0) for name in classes])
    centroid = classes[np.argmax(test @ centroids.T, axis=1)]
    return result | {"logreg_top1": float(np.mean(logreg == truth)), "centroid_top1": float(np.mean(centroid == truth))}


def grown_box(box: Sequence[float], shape: tuple[int, ...], growth: float = FACE_GROWTH) -> tuple[slice, slice]:
    """Row and column slices of ``box`` (x1, y1, x2, y2) grown by ``growth`` of its width and
    height in all (half on each side), clipped to an image of ``shape``."""
    x1, y1, x2, y2 = box
    dx, dy = growth * (x2 - x1) / 2, growth * (y2 - y1) / 2
    height, width = shape[:2]
    top, bottom = max(int(np.floor(y1 - dy)), 0), min(int(np.ceil(y2 + dy)), height)
    left, right = max(int(np.floor(x1 - dx)), 0), min(int(np.ceil(x2 + dx)), width)
    return slice(top, bottom), slice(left, right)


def face_quality(original: Path, protected: Path, box: Sequence[float] | None) -> dict:
    """SSIM and PSNR of the face crop (:func:`grown_box`; SSIM the mean over the R, G and B
    channels, PSNR over all three) of ``protected`` against ``original``, and the visibility record
    of the detected face box (:class:`faceguard.visibility.Visibility`: FLIP, CIEDE2000 and their
    JPEG-90/75 references, ``visibility_`` before each key); empty when there is no box or the
    sizes differ."""
    from faceguard.protect.photo import colour_and_alpha, photo_metrics, read_photo
    from faceguard.visibility import Visibility

    before, after = read_photo(original).pixels, read_photo(protected).pixels
    if box is None or before.shape != after.shape:
        return {}
    rows, cols = grown_box(box, before.shape)
    metrics = photo_metrics(np.ascontiguousarray(before[rows, cols]), np.ascontiguousarray(after[rows, cols]))
    seen = Visibility(colour_and_alpha(before)[0], colour_and_alpha(after)[0]).region(box)
    return {"ssim_face": metrics["ssim"], "psnr_face": metrics["psnr"],
            **{f"visibility_{key}": value for key, value in seen.items()}}


# the visibility keys summarised per tree (median over the faces: one blotched face is one face)
VISIBILITY_SUMMARY = ("flip", "ciede2000", "ratio_jpeg75", "ratio_jpeg90", "flip_jpeg75", "flip_jpeg90")


def summarise_quality(entries: Sequence[dict], faces: Sequence[dict]) -> dict:
    """Counts, mean and min SSIM/PSNR (photo: the manifest's; face: ``faces``), median and max of the
    face visibility numbers (:data:`VISIBILITY_SUMMARY`), L∞ max, s/photo."""
    done = [entry for entry in entries if entry.get("status") == "protected"]
    out = {f"photos_{status}": sum(entry.get("status") == status for entry in entries)
           for status in ("protected", "no_face", "error")}
    for key, values in (("ssim_photo", [e.get("ssim") for e in done]), ("psnr_photo", [e.get("psnr") for e in done]),
                        ("ssim_face", [f.get("ssim_face") for f in faces]),
                        ("psnr_face", [f.get("psnr_face") for f in faces])):
        kept = [float(v) for v in values if v is not None]
        if kept:
            out[f"{key}_mean"], out[f"{key}_min"] = round(float(np.mean(kept)), 4), round(min(kept), 4)
    for key in VISIBILITY_SUMMARY:
        kept = [float(f[f"visibility_{key}"]) for f in faces if f.get(f"visibility_{key}") is not None]
        if kept:
            out[f"{key}_face_median"] = round(float(np.median(kept)), 4)
            out[f"{key}_face_max"] = round(max(kept), 4)
    if done:
        out["linf_max"] = max(entry["linf"] for entry in done)
    seconds = [entry["seconds"] for entry in entries if "seconds" in entry]
    if seconds:
        out["seconds_per_photo"] = round(float(np.mean(seconds)), 2)
    return out
