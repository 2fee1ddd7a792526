"""Check original / protected photo pairs: same size and mode, |Δ| ≤ ε, PSNR and SSIM.

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


def _counterpart(protected_root: Path, rel: Path) -> Path | None:
    for candidate in (rel, rel.with_suffix(".png")):
        if (protected_root / candidate).is_file():
            return protected_root / candidate
    return None


def check_pair(original: Path, protected: Path, eps: float, strict: bool = False) -> PairCheck:
    """Compare one pair (``eps`` in 0–255 pixel levels); ``problem`` says what is wrong, if anything."""
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
    if check.linf > eps and (strict or not check.lossy):
        check.problem = f"L-inf {check.linf} exceeds eps {eps:g}"
    return check


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


def verify_folders(originals: Path, protected: Path, eps: float, strict: bool = False) -> list[PairCheck]:
    """Check every photo under ``originals`` (a folder or one file) against ``protected``."""
    return [check_pair(pair.original, pair.protected, eps, strict) if pair.protected is not None
            else PairCheck(str(pair.original), None, pair.problem) for pair in find_pairs(originals, protected)]
