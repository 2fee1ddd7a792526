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

from faceguard.units import check_eps
from faceguard.protect.photo import is_lossless, photo_metrics, read_photo
from recognition.files import find_photos, one_line


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


def verify_folders(originals: Path, protected: Path, eps: float, strict: bool = False) -> list[PairCheck]:
    """Check every photo under ``originals`` (a folder or one file) against ``protected``."""
    if originals.is_file():
        target = protected if protected.is_file() else _counterpart(protected, Path(originals.name))
        if target is None:
            return [PairCheck(str(originals), None, "no protected counterpart")]
        return [check_pair(originals, target, eps, strict)]
    rels, outside = find_photos(originals)
    checks = [PairCheck(str(originals / rel), None, "symlink outside ORIGINALS; not followed") for rel in outside]
    for rel in rels:
        target = _counterpart(protected, rel)
        if target is None:
            checks.append(PairCheck(str(originals / rel), None, "no protected counterpart"))
        else:
            checks.append(check_pair(originals / rel, target, eps, strict))
    return checks
