"""Protect a whole photo folder (or one photo) into a mirrored output tree: what the CLI runs.

Every image under PHOTOS (JPEG, PNG, WebP, BMP, TIFF, extensions in any case; symlinks leaving
PHOTOS are reported, not followed) gets one outcome: ``protected`` (written with the same name and
format, or as PNG with ``fmt="png"``), ``no_face`` (copied unchanged) or ``error`` (one line; the
run goes on). Originals are only read, and the output folder may not overlap PHOTOS.

A method learned over the whole folder (``error-minimizing-classwise``: one Δ per person) first
detects every photo's faces, the finished ones too, learns the noise from them and saves it as
``OUT/identity-noise.safetensors`` (:func:`prepare_identity_noise`); then it protects as above.

The manifest ``OUT/manifest.json`` records each photo as it finishes (through an append-only
journal, :mod:`faceguard.protect.manifest`, so a large corpus does not rewrite it per photo). A rerun skips
every photo whose entry is finished under the same settings, whose input still has the recorded
SHA-256 and whose output still has its recorded SHA-256: killing a run loses at most the photo in
flight, and since outputs are written to a temporary file and renamed, never leaves a truncated
one (temporary files of a killed run are removed at the next start).

Under torchrun (``context`` from :func:`recognition.distributed.init_distributed`) rank r detects
and crafts the photos r, r + W, … of those to do, and the processes share their faces' embeddings
per identity group, every group before any crafting (so identity centres and clusters come out the
same in each, and as in one process). All ranks journal into one manifest, which rank 0 writes at
the end (:class:`~faceguard.protect.manifest.Manifest`, ``shared``). Each photo is crafted with the
same seed whichever process does it, so the outputs equal a single process's. Methods learned over
the whole folder run in one process.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from faceguard.progress import showing_progress
from faceguard.protect.identities import assign_names, identity_key, share_embeddings
from faceguard.protect.manifest import MANIFEST, Manifest
from faceguard.protect.photo import colour_and_alpha, is_lossless, photo_metrics, read_photo, write_photo
from faceguard.protect.identity_noise import NOISE_FILE, IdentityNoise
from faceguard.protect.protector import Protector
from faceguard.protect.warp import as_rgb
from faceguard.registry import NO_REGULARIZER
from faceguard.settings import CraftSettings, protect_settings
from recognition.distributed import DistributedContext, all_reduce_sum, barrier
from recognition.files import PHOTO_EXTENSIONS, file_sha256, find_photos, one_line, write_bytes_atomic

REPORT = "report.html"
STATUSES = ("protected", "no_face", "error")


@dataclass
class FolderOptions:
    """Folder-level choices: output folder (default ``PHOTOS-protected`` beside PHOTOS), output
    format (``keep`` or ``png``), identity mode, HTML report, the visibility numbers of each photo
    (:mod:`faceguard.visibility`; they cost about three FLIPs of each face box), progress bar, the
    command line."""

    out: Path | None = None
    format: str = "keep"
    identities: str = "folders"
    report: bool = False
    visibility: bool = True
    progress: bool = True
    command: str = ""


@dataclass
class Summary:
    """Counts of this run's outcomes (skipped = finished by an earlier run) and where things are."""

    counts: Counter = field(default_factory=Counter)
    faces: int = 0
    out: Path | None = None
    clusters: dict[str, list[str]] = field(default_factory=dict)

    def add_up(self, context: DistributedContext) -> None:
        """Sum the counts of every process (each counted the photos it handled)."""
        keys = [*STATUSES, "skipped"]
        totals = all_reduce_sum(torch.tensor([self.counts[k] for k in keys] + [self.faces]), context).tolist()
        self.counts = Counter(dict(zip(keys, totals[:-1])))
        self.faces = totals[-1]

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["error"] else 0

    def line(self) -> str:
        parts = ", ".join(f"{self.counts[s]} {s.replace('_', ' ')}" for s in (*STATUSES, "skipped"))
        return (f"protect: {sum(self.counts.values())} files: {parts}; {self.faces} faces protected; "
                f"output {self.out}; manifest {self.out / MANIFEST}")


def default_output(photos: Path) -> Path:
    """``PHOTOS-protected`` beside a folder; ``NAME-protected`` beside a single photo."""
    return photos.parent / f"{photos.stem if photos.is_file() else photos.name}-protected"


def _inputs(photos: Path, out: Path) -> tuple[Path, list[Path], list[Path]]:
    """(root, photos relative to it, symlinks leaving it); checks that OUT does not overlap."""
    if not photos.exists():
        raise FileNotFoundError(f"{photos} does not exist")
    root = photos if photos.is_dir() else photos.parent
    root_real, out_real = root.resolve(), out.resolve()
    if photos.is_dir() and (out_real.is_relative_to(root_real) or root_real.is_relative_to(out_real)):
        raise ValueError(f"output {out} and PHOTOS {photos} overlap; choose another --out")
    if photos.is_file():
        if photos.suffix.lower() not in PHOTO_EXTENSIONS:
            raise ValueError(f"{photos} is not a JPEG, PNG, WebP, BMP or TIFF file")
        if out_real == root_real:
            raise ValueError(f"output {out} is the folder of {photos}; choose another --out")
        return root, [Path(photos.name)], []
    found, outside = find_photos(root)
    return root, found, outside


def _output_names(rels: list[Path], fmt: str, outcomes: dict[str, dict]) -> dict[str, Path]:
    """Output path per input; a clash (``a.jpg`` and ``a.png`` under ``--format png``, compared
    case-insensitively) is the later photo's error."""
    names, claimed = {}, {}
    for rel in rels:
        target = rel.with_suffix(".png") if fmt == "png" else rel
        key = target.as_posix().lower()
        if key in claimed:
            outcomes[rel.as_posix()] = {"status": "error", "reason": f"output {target} is already "
                                        f"taken by {claimed[key]}"}
        else:
            claimed[key], names[rel.as_posix()] = rel.as_posix(), target
    return names


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the ``.NAME.*.tmp`` files that a killed run's atomic writes left behind."""
    if out.is_dir():
        for path in out.rglob(".*.tmp"):
            if path.is_file() and not path.is_symlink():
                path.unlink()


def _settings(protector: Protector, options: FolderOptions, digests: dict[str, str]) -> dict:
    """Everything that changes an output: a finished entry counts only under equal settings. For a
    method learned over the whole folder that includes the folder itself (every photo's path and
    SHA-256), so adding or changing a photo protects every photo again with the new noise; for
    targeted evasion, the target folder's listing (:attr:`TargetSet.sha256`)."""
    settings = {"crafting": protector.settings.to_dict(), "format": options.format,
                "identities": options.identities, "profile_sha256": protector.profile.sha256,
                "aligned": protector.aligned}
    if protector.corpus:
        listing = json.dumps(sorted(digests.items())).encode()
        settings["corpus_sha256"] = hashlib.sha256(listing).hexdigest()
    if protector.targets is not None:
        settings["targets_sha256"] = protector.targets.sha256
    return settings


def _digests(root: Path, rels: list[str]) -> tuple[dict[str, str], dict[str, dict]]:
    """SHA-256 per readable input, and an error entry per unreadable one."""
    digests, errors = {}, {}
    for rel in rels:
        try:
            digests[rel] = file_sha256(root / rel)
        except OSError as exc:
            errors[rel] = {"status": "error", "reason": one_line(exc)}
    return digests, errors


def upgrade_settings(stored: dict) -> dict:
    """Manifest settings of an older version in today's layout, so a folder protected then resumes
    instead of being protected again: version 1 (flat crafting keys, written before
    :class:`CraftSettings`), and crafting settings of a version :meth:`CraftSettings.from_dict` reads."""
    if "crafting" in stored:
        try:
            return {**stored, "crafting": CraftSettings.from_dict(stored["crafting"]).to_dict()}
        except (TypeError, ValueError):  # unreadable: compared as stored, so protected again
            return stored
    if "eps" not in stored:
        return stored
    keys = ("eps", "steps", "restarts", "variant", "regularizer", "reg_weight", "seed", "backend")
    crafting = {key: stored[key] for key in keys if key in stored}
    crafting["regularizer"] = crafting.get("regularizer") or NO_REGULARIZER
    rest = {key: value for key, value in stored.items() if key not in keys}
    return {"crafting": protect_settings("alignment", **crafting).to_dict(), **rest,
            "aligned": rest.get("aligned", False)}


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 6) if kept else None


def visibility_entry(original: np.ndarray, saved: np.ndarray, details: list[dict]) -> dict:
    """Add each face's visibility record to its ``details`` (its box against the original's JPEG
    re-saves, :class:`faceguard.visibility.Visibility`) and return the photo's: the most visible
    face's record, with ``photo_flip`` and ``photo_ciede2000`` of the whole photo."""
    from faceguard.visibility import photo_visibility

    seen = photo_visibility(colour_and_alpha(original)[0], colour_and_alpha(saved)[0], [d["box"] for d in details])
    for detail, record in zip(details, seen["faces"]):
        detail["visibility"] = record
    worst = max(seen["faces"], key=lambda record: record["flip"])
    return {**worst, "photo_flip": seen["photo"]["flip"], "photo_ciede2000": seen["photo"]["ciede2000"]}


def _protect_one(protector: Protector, source: Path, target: Path, fmt: str, faces: list,
                 names: list[str | None], visibility: bool = True) -> dict:
    """Protect, write, re-read and measure one photo whose faces are already detected (with the
    visibility numbers of the saved file unless ``visibility`` is False)."""
    photo = read_photo(source)
    out_format = "PNG" if fmt == "png" else photo.format
    entry = {"faces": len(faces), "format": out_format, "lossy": not is_lossless(out_format)}
    if not faces:
        if out_format == photo.format:  # copied unchanged, byte for byte
            write_bytes_atomic(target, source.read_bytes())
        else:
            write_photo(photo, photo.pixels, target, out_format)
        return entry | {"status": "no_face", "reason": "no face detected"}
    crafted = protector.protect_pixels(photo.pixels, faces, names)
    write_photo(photo, crafted.pixels, target, out_format)
    saved = read_photo(target).pixels
    protector.measure_saved(crafted, saved, faces)
    details = [asdict(face) for face in crafted.faces]
    loss = {key: _mean([d[f"loss_{key}"] for d in details]) for key in ("clean", "crafted", "saved")}
    seen = {"visibility": visibility_entry(photo.pixels, saved, details)} if visibility else {}
    return entry | {"status": "protected", "reason": "", **photo_metrics(photo.pixels, saved), **seen,
                    "loss": loss, "face_details": details}


def protect_folder(photos: Path, protector: Protector, options: FolderOptions,
                   context: DistributedContext | None = None) -> Summary:
    """Protect every photo of ``photos`` (a folder, or one file) as the module doc describes;
    ``context``: this process's place under torchrun (the summary then counts every process's photos)."""
    context = context or DistributedContext(rank=0, world_size=1, device=protector.device)
    shared = context.world_size > 1
    if shared and protector.corpus:
        raise ValueError(f"{protector.settings.method} is learned over the whole folder in one process; "
                         "run it without torchrun")
    photos = Path(photos)
    out = Path(options.out) if options.out is not None else default_output(photos)
    root, rels, outside = _inputs(photos, out)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
    digests, unreadable = _digests(root, [rel.as_posix() for rel in rels])
    settings = _settings(protector, options, digests)
    if not context.is_main:
        barrier(context)  # rank 0 has opened (and rewritten) the manifest
    manifest = Manifest(out / MANIFEST, settings, options.command, upgrade_settings, shared=shared,
                        owner=context.is_main)
    if context.is_main:
        barrier(context)
    run = _FolderRun(protector, manifest, root, out, options, context)
    run.digests, run.unreadable = digests, unreadable
    try:
        run.protect_all(photos, rels, outside)
    finally:
        barrier(context)
        manifest.close()
    run.summary.clusters = manifest.clusters
    if shared:
        run.summary.add_up(context)
    if options.report and context.is_main:
        from faceguard.protect.report import write_report

        write_report(out / REPORT, root, out, manifest.files, protector.eps)
    return run.summary


class _FolderRun:
    """One protect run over a folder: outcomes go to the manifest and the summary as they come."""

    def __init__(self, protector: Protector, manifest: Manifest, root: Path, out: Path,
                 options: FolderOptions, context: DistributedContext) -> None:
        self.protector, self.manifest, self.root, self.out, self.options = protector, manifest, root, out, options
        self.context = context
        self.mine: set[str] = set()  # the photos this process crafts (all of them in one process)
        self.summary = Summary(out=out)
        self.targets: dict[str, Path] = {}  # output path per input
        self.digests: dict[str, str] = {}  # input SHA-256 per readable input
        self.unreadable: dict[str, dict] = {}  # error entry per input that could not be read
        self.crops: dict[str, torch.Tensor] = {}  # clean crops per photo (methods learned over the folder)
        self.bar = None

    def record(self, rel: str, entry: dict) -> None:
        """Journal one file's outcome, count it, print its error line (only the process that
        handles the file records it)."""
        if rel not in self.mine:
            return
        self.manifest.record_file(rel, {"input": rel, **entry})
        self.summary.counts[entry["status"]] += 1
        if entry["status"] == "protected":
            self.summary.faces += entry["faces"]
        if entry["status"] == "error":
            line = f"protect: {self.root / rel}: {entry['reason']}"
            (self.bar.write if self.bar is not None else print)(line, file=sys.stderr)
        if self.bar is not None:
            self.bar.update(1)

    def protect_all(self, photos: Path, rels: list[Path], outside: list[Path]) -> None:
        """Record the symlinks and name clashes, skip finished photos, protect the rest by identity group."""
        from tqdm.auto import tqdm

        options, context = self.options, self.context
        errors = {rel.as_posix(): {"status": "error", "reason": "symlink to a file outside PHOTOS; not followed"}
                  for rel in outside}
        self.targets = _output_names(rels, options.format, errors)
        self.mine = set(errors) | set(self.unreadable) if context.is_main else set()
        for rel, entry in errors.items():
            self.record(rel, entry)
        todo = []
        for rel in self.targets:
            if rel in self.unreadable:
                self.record(rel, self.unreadable[rel])
            elif self.manifest.finished(rel, self.digests[rel], self.out):
                self.summary.counts["skipped"] += context.is_main
            else:
                todo.append(rel)
        self.mine |= set(todo[context.rank::context.world_size])
        corpus = self.protector.corpus and bool(todo)
        groups: dict[str | None, list[str]] = {}
        for rel in [r for r in self.targets if r in self.digests] if corpus else todo:
            key = identity_key(Path(rel), options.identities, photos.name)
            groups.setdefault(None if options.identities == "cluster" else key, []).append(rel)
        shown = options.progress and context.is_main
        with tqdm(total=len(self.mine & set(todo)), unit="photo", desc="protect", disable=not shown or None) as self.bar:
            if corpus:  # every photo's faces first (finished ones too: the noise is learned from all)
                detected = [self.detect_group(key, group, set(todo)) for key, group in groups.items()]
                with showing_progress(shown):  # its rounds, accuracy and time left
                    prepare_identity_noise(self.protector, detected, self.crops, self.out, self.manifest.settings)
                for faces, names in detected:
                    self.protect_detected({rel: faces[rel] for rel in faces if rel in todo}, names)
            else:  # group by group; under torchrun every group is detected (and shared) first, so the
                # processes wait for each other once, not at each group after crafting unequal shares of the last
                detected = (self.detect_group(key, group, set(group)) for key, group in groups.items())
                for faces, names in list(detected) if context.world_size > 1 else detected:
                    self.protect_detected(faces, names)

    def detect_group(self, key: str | None, group: list[str], todo: set[str]) -> tuple[dict, dict]:
        """Detect and embed every photo of one identity group and name its faces: (faces and
        embeddings per photo, names per photo). A photo that fails is recorded as an error if it
        is to be protected in this run, and left out. Under torchrun each process detects only the
        photos it crafts (:func:`~faceguard.protect.identities.share_embeddings` gives it the others' embeddings)."""
        protector, detected = self.protector, {}
        split = self.context.world_size > 1  # detect only this process's photos, then share embeddings
        for rel in group:  # faces and embeddings, so identity centres exist before crafting
            if split and rel not in self.mine:
                continue
            try:
                pixels = read_photo(self.root / rel).pixels
                faces = protector.detect(pixels)
                detected[rel] = (faces, protector.embed_pixels(pixels, faces))
                if protector.corpus and faces:
                    self.crops[rel] = protector.clean_crops(colour_and_alpha(pixels)[0], faces).cpu()
            except Exception as exc:  # one bad photo must not stop the run
                if rel in todo:
                    self.record(rel, {"status": "error", "reason": one_line(exc)})
        if split:
            detected = share_embeddings(group, detected, protector.profile.head.weight.shape[1], self.context)
        names = assign_names(detected, key, self.options.identities, self.manifest, protector)
        if protector.corpus:  # a face of no named person is a class of its own
            names = {rel: [n if n is not None else f"{rel}#{k}" for k, n in enumerate(faces)]
                     for rel, faces in names.items()}
        return detected, names

    def protect_detected(self, detected: dict[str, tuple], names: dict[str, list[str | None]]) -> None:
        """Protect, write and record each detected photo."""
        protector = self.protector
        for rel, (faces, _) in detected.items():
            if rel not in self.mine:
                continue
            start, target = time.perf_counter(), self.out / self.targets[rel]
            try:
                entry = _protect_one(protector, self.root / rel, target, self.options.format, faces, names[rel],
                                     self.options.visibility)
                entry |= {"output": self.targets[rel].as_posix(), "input_sha256": self.digests[rel],
                          "output_sha256": file_sha256(target), "eps": protector.eps}
            except Exception as exc:  # one bad photo must not stop the run
                entry = {"status": "error", "reason": one_line(exc)}
            self.record(rel, entry | {"seconds": round(time.perf_counter() - start, 3)})


def prepare_identity_noise(protector: Protector, detected: list[tuple[dict, dict]], crops: dict[str, torch.Tensor],
                           out: Path, settings: dict) -> None:
    """Give ``protector`` its per-person noise: read ``OUT/identity-noise.safetensors`` if it was
    learned under the same settings (the folder's digest included), else learn it from the clean
    crops of every detected face and save it there."""
    path = out / NOISE_FILE
    meta = json.loads(json.dumps({"settings": settings}))
    if path.exists() and IdentityNoise.stored_meta(path) == meta:
        protector.identity_noise = IdentityNoise.load(path, protector.profile.backbone, protector.device)
        return
    rels = [rel for faces, _ in detected for rel in faces if rel in crops]
    names = [name for faces, people in detected for rel in faces if rel in crops for name in people[rel]]
    gray = all(crops[rel].shape[1] == 1 for rel in rels)  # gray noise for gray photos, else colour
    stacked = torch.cat([crops[rel] if gray else as_rgb(crops[rel]) for rel in rels])
    protector.learn_identity_noise(stacked, names).save(path, meta)
