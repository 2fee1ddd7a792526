"""Check original / protected photo pairs: same size and mode, |Δ| ≤ ε, PSNR, SSIM and visibility.

Visibility (:mod:`faceguard.visibility`): FLIP and CIEDE2000 of each face against the same face in
JPEG-90/75 re-saves of the original. The faces are the boxes the output folder's manifest recorded
for the photo; without a manifest entry, the bounding box of the changed pixels stands in for them.
PSNR is over all channels; SSIM is the mean of the R, G and B channels' (each channel alone, so it
does not see a change of hue that keeps each channel's structure).

Pairs are matched by relative path under the two folders (a protected ``a.png`` also answers for an
original ``a.jpg``, as ``--format png`` writes). Both sides are decoded by :func:`read_photo`,
upright per EXIF, so they are compared as displayed. JPEG outputs cannot hold the bound exactly
(re-encoding moves pixels): they are reported with their measured L∞ and checked against ε only
with ``strict``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from faceguard.protect.photo import is_lossless, photo_metrics, read_photo
from faceguard.units import check_eps
from recognition.files import find_photos, one_line

NO_COUNTERPART = "no protected counterpart"
OUTSIDE = "symlink outside ORIGINALS; not followed"


@dataclass
class PairCheck:
    """One pair: relative path, protected file found, problem (empty when fine), measurements."""

    rel: str
    protected: str | None
    problem: str = ""
    lossy: bool = False
    linf: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    visibility: list[dict] | None = None  # one record per face (faceguard.visibility.Visibility.region)


def _counterpart(protected_root: Path, rel: Path) -> Path | None:
    for candidate in (rel, rel.with_suffix(".png")):
        if (protected_root / candidate).is_file():
            return protected_root / candidate
    return None


def check_pair(original: Path, protected: Path, eps: float, strict: bool = False,
               faces: list[list[float]] | None = None, visibility: bool = True) -> PairCheck:
    """Compare one pair (``eps`` in 0–255 pixel levels); ``problem`` says what is wrong, if anything.
    ``faces``: the face boxes whose visibility is measured (None: the changed pixels' box)."""
    from faceguard.protect.photo import colour_and_alpha
    from faceguard.visibility import Visibility, changed_box

    eps = check_eps(eps)
    check = PairCheck(str(original), str(protected))
    try:
        before, after = read_photo(original), read_photo(protected)
    except Exception as exc:  # undecodable either side: a violation, reported in one line
        check.problem = one_line(exc)
        return check
    check.lossy = not is_lossless(after.format)
    if before.pixels.shape != after.pixels.shape:
        check.problem = f"size/channels differ: {before.pixels.shape} vs {after.pixels.shape}"
        return check
    metrics = photo_metrics(before.pixels, after.pixels)
    check.linf, check.psnr, check.ssim = metrics["linf"], metrics["psnr"], metrics["ssim"]
    if visibility:
        colour_before, colour_after = colour_and_alpha(before.pixels)[0], colour_and_alpha(after.pixels)[0]
        if faces is None:
            box = changed_box(colour_before, colour_after)
            faces = [] if box is None else [[box[1].start, box[0].start, box[1].stop, box[0].stop]]
        seen = Visibility(colour_before, colour_after) if faces else None
        check.visibility = [seen.region(face) for face in faces] if seen else []
    if check.linf > eps and (strict or not check.lossy):
        check.problem = f"L-inf {check.linf} exceeds eps {eps:g}"
    return check


def manifest_faces(protected: Path) -> dict[str, list[list[float]]]:
    """Face boxes per original relative path from ``protected``'s manifest (empty without one)."""
    from faceguard.protect.manifest import MANIFEST, read_manifest

    if not (protected / MANIFEST).is_file():
        return {}
    files = read_manifest(protected).get("files", {})
    return {rel: [face["box"] for face in entry.get("face_details", [])]
            for rel, entry in files.items() if entry.get("status") == "protected"}


@dataclass(frozen=True)
class Pair:
    """An original (``rel`` is its path under ORIGINALS) and its protected counterpart, or None
    with the reason in ``problem``."""

    original: Path
    rel: Path
    protected: Path | None
    problem: str = ""


def find_pairs(originals: Path, protected: Path) -> list[Pair]:
    """Every photo under ``originals`` (a folder or one file) with its counterpart in ``protected``
    (the output tree of ``faceguard protect``, or one photo when ``originals`` is one photo)."""
    if originals.is_file():
        rel = Path(originals.name)
        target = protected if protected.is_file() else _counterpart(protected, rel)
        return [Pair(originals, rel, target, "" if target else NO_COUNTERPART)]
    if not originals.is_dir():
        raise FileNotFoundError(f"{originals} does not exist")
    rels, outside = find_photos(originals)
    pairs = [Pair(originals / rel, rel, None, OUTSIDE) for rel in outside]
    for rel in rels:
        target = _counterpart(protected, rel)
        pairs.append(Pair(originals / rel, rel, target, "" if target else NO_COUNTERPART))
    return pairs


def verify_folders(originals: Path, protected: Path, eps: float, strict: bool = False,
                   visibility: bool = True) -> list[PairCheck]:
    """Check every photo under ``originals`` (a folder or one file) against ``protected``, with
    the visibility of the faces its manifest recorded (:func:`manifest_faces`)."""
    faces = manifest_faces(protected) if protected.is_dir() else {}
    return [check_pair(pair.original, pair.protected, eps, strict, faces.get(pair.rel.as_posix()), visibility)
            if pair.protected is not None else PairCheck(str(pair.original), None, pair.problem)
            for pair in find_pairs(originals, protected)]
