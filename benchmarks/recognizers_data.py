"""The photos of ``python -m benchmarks recognizers``: who is in them, which are released, and the
trees the product protects and the defenses re-encode.

People come from the bundle's ``manifest.csv`` files (``realfaces/``: ``file`` relative to the
folder; ``photos/``: ``file`` relative to the bundle, ``group/`` left out: several people per
photo). Only people with at least two photos take part. Within a person, photos keep manifest
order and every other one, starting with the first, is *released* (what the person posts, and
what gets protected); the rest are *probes*, which stay clean (photos of the person a recognizer
meets later). So each person has at least one of each.

Work folder layout (everything derived from the bundle is rebuilt or resumed, never trusted blindly):

- ``released/<person>/<file>``: copies of the released originals, exactly the current selection;
  the input tree of ``protect_folder``;
- ``<method>-eps<ε>-steps<n>/``: its output tree with the product's resumable manifest;
- ``defended/<tree>/<defense>/<person>/<file>``: a defense applied to each released photo of a tree
  (``clean`` or a protected one), rewritten only when missing;
- ``targets/<person>/<n>.png``: the public identities targeted evasion pulls faces toward
  (:func:`write_targets`: ORL's people, none of whom is in ``realfaces/`` or ``photos/``).
"""
from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from recognition.files import file_sha256, load_rgb, write_bytes_atomic

DATASETS = ("realfaces", "photos")
SKIP_PEOPLE = {"photos": {"group"}}
JPEG_QUALITY = 75
RELEASED = "released"
TARGETS = "targets"
TARGET_PHOTOS = 3  # photos per ORL person in the target set


@dataclass(frozen=True)
class Sample:
    """One photo of one person: where the original is, its name in the released tree
    (``person/file``) and whether it is released (protected) or a clean probe."""

    person: str
    source: Path
    rel: str
    released: bool


def read_people(data_dir: Path, datasets: tuple[str, ...]) -> dict[str, list[Path]]:
    """Person → original photo paths in manifest order, over ``datasets`` of the bundle.

    A name met in two datasets is kept apart as ``dataset-name``.
    """
    people: dict[str, list[Path]] = {}
    for dataset in datasets:
        root = data_dir / dataset
        with open(root / "manifest.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        mine: dict[str, list[Path]] = {}
        for row in rows:
            if row["person"] in SKIP_PEOPLE.get(dataset, set()):
                continue
            rel = Path(row["file"])
            if rel.parts[0] == dataset and not (root / rel).exists():
                rel = Path(*rel.parts[1:])
            mine.setdefault(row["person"], []).append(root / rel)
        for person, paths in mine.items():
            people[f"{dataset}-{person}" if person in people else person] = paths
    return people


def half_of(people: dict[str, list[Path]], half: str) -> list[str]:
    """One half of the people with ≥ 2 photos, sorted by name and taken alternately: ``tuning``
    the 1st, 3rd, ... and ``held-out`` the 2nd, 4th, ... (session 20's split: settings are chosen
    on the first, reported on the second)."""
    names = sorted(name for name, paths in people.items() if len(paths) >= 2)
    if half not in ("tuning", "held-out"):
        raise ValueError(f"half is tuning or held-out, got {half!r}")
    return names[0::2] if half == "tuning" else names[1::2]


def split_samples(people: dict[str, list[Path]], only: list[str] | None = None,
                  limit: int | None = None) -> list[Sample]:
    """Released and probe samples of the people with ≥ 2 photos, sorted by name; ``only`` keeps
    the named people (unknown names raise), ``limit`` the first N of them (smoke runs)."""
    if only:
        unknown = sorted(set(only) - set(people))
        if unknown:
            raise ValueError(f"unknown people {', '.join(unknown)}; known: {', '.join(sorted(people))}")
    names = [name for name in sorted(people) if len(people[name]) >= 2 and (not only or name in only)]
    samples = []
    for name in names[:limit]:
        for k, path in enumerate(people[name]):
            samples.append(Sample(name, path, f"{name}/{path.name}", released=k % 2 == 0))
    return samples


def sync_released(work: Path, samples: list[Sample]) -> Path:
    """``work/released`` holding exactly the released originals (copied when missing or changed,
    anything else removed, so ``protect_folder`` protects only the current selection)."""
    root = work / RELEASED
    wanted = {s.rel: s.source for s in samples if s.released}
    if root.is_dir():
        for path in sorted(root.rglob("*"), reverse=True):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    for rel, source in wanted.items():
        target = root / rel
        if not target.is_file() or file_sha256(target) != file_sha256(source):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return root


def jpeg_resave(path: Path) -> bytes:
    """The photo re-saved as JPEG at :data:`JPEG_QUALITY` (Pillow), as a scraper's pipeline might."""
    buffer = io.BytesIO()
    Image.fromarray(load_rgb(path)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def half_size(path: Path) -> bytes:
    """The photo downscaled to half its width and height (Pillow, bicubic), saved as lossless PNG
    so that only the resampling acts."""
    image = Image.fromarray(load_rgb(path))
    small = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return buffer.getvalue()


# defense name -> (transform of one photo file into new file bytes, their suffix); "none" = as released
DEFENSES: dict[str, tuple[Callable[[Path], bytes], str] | None] = {
    "none": None, f"jpeg{JPEG_QUALITY}": (jpeg_resave, ".jpg"), "half": (half_size, ".png")}


def defended_paths(files: dict[str, Path], out: Path, defense: str) -> dict[str, Path]:
    """``files`` (released rel → photo) after ``defense``, written under ``out``; a file is
    rewritten when missing or older than its source (a re-protected photo)."""
    if DEFENSES[defense] is None:
        return dict(files)
    transform, suffix = DEFENSES[defense]
    result = {}
    for rel, path in files.items():
        target = (out / rel).with_suffix(suffix)
        if not target.is_file() or target.stat().st_mtime < path.stat().st_mtime:
            write_bytes_atomic(target, transform(path))
        result[rel] = target
    return result


@dataclass
class ProtectedTree:
    """One method's protected release: output folder, per released rel the file a scraper gets
    (the original when protection failed on it), and the product's manifest entries."""

    name: str
    out: Path
    files: dict[str, Path]
    entries: dict[str, dict]


def write_targets(work: Path, data_dir: Path, per_person: int = TARGET_PHOTOS) -> Path:
    """``work/targets/``: the first ``per_person`` photos of each of ORL's 39 people (the bundle's
    ``orl_faces.npz``, 92x112 gray) as PNG files, one folder per person, rewritten only when
    missing: a public identity set that nobody of the benchmark's photos belongs to."""
    out = work / TARGETS
    with np.load(data_dir / "orl_faces.npz", allow_pickle=False) as orl:
        images, labels, names = orl["images"], orl["labels"], orl["names"]
    for label, name in enumerate(names):
        for n, index in enumerate(np.flatnonzero(labels == label)[:per_person]):
            target = out / str(name) / f"{n}.png"
            if not target.is_file():
                buffer = io.BytesIO()
                Image.fromarray(images[index]).save(buffer, format="PNG")
                write_bytes_atomic(target, buffer.getvalue())
    return out


def protect_released(work: Path, released: Path, samples: list[Sample], label: str, method: str, eps: float,
                     settings: dict, device: str, quiet: bool, log: Callable[[str], None],
                     targets: Path | None = None) -> ProtectedTree:
    """Protect ``released`` with the product (``Protector`` + ``protect_folder``, format kept,
    identities from the person folders) by crafting ``method`` with ``settings`` (``targets``: the
    target folder of targeted evasion), in the tree of the protection ``label``, resuming from the
    tree's manifest."""
    from faceguard.protect.folder import FolderOptions, protect_folder
    from faceguard.protect.manifest import read_manifest
    from faceguard.protect.protector import Protector

    name = f"{label}-eps{eps:g}-steps{settings['steps']}"
    out = work / name
    options = " ".join(f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
                       for key, value in settings.items())
    command = f"faceguard protect {released} --out {out} --method {method} --eps {eps:g} {options}"
    protector = Protector(method=method, eps=eps, device=device, **settings)
    if method == "target":
        protector.load_targets(targets)
        command += f" --targets {targets}"
    summary = protect_folder(released, protector, FolderOptions(out=out, progress=not quiet, command=command,
                                                                     visibility=False))
    log(f"{name}: {summary.line()}")
    entries = read_manifest(out)["files"]
    files = {}
    for sample in samples:
        if sample.released:
            entry = entries.get(sample.rel, {})
            done = entry.get("status") in ("protected", "no_face") and "output" in entry
            files[sample.rel] = out / entry["output"] if done else released / sample.rel
    return ProtectedTree(name, out, files, {s.rel: entries.get(s.rel, {}) for s in samples if s.released})
