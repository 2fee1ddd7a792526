"""``python -m recognition align SRC DST``: detect and align every face of a photo tree.

Each photo under SRC (searched recursively) becomes an aligned PNG crop at the same relative place
under DST, so identity sub-folders carry over to the face-recognition training tree. Landmarks come
from MTCNN (:mod:`recognition.detection`) or, with ``--landmarks``, from a CelebA-style list.
DST/align_report.json records every photo's status (aligned, no_face, several_faces, error) with a
one-line reason. A bad photo costs one stderr line and the run goes on; the exit code is 1 when any
photo ended in error, else 0 (photos without a face count as handled). Usage errors exit with 2.

Safety: originals are only read, and SRC and DST may not overlap, so no output can land on an
input. Pillow may only use the decoders of the accepted formats: a file whose name says ``.jpg``
but whose bytes are e.g. EPS (which Pillow renders by running Ghostscript) is refused, so reading
a photo never executes code. Symlinks to files outside SRC are reported as errors, not read;
symlinked folders are not entered (their targets inside SRC are walked anyway, and loops are
impossible). Every output is written to a temporary file and renamed into place, so an
interrupted run never leaves a half-written PNG or report.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from recognition.cli import add_device_option
from recognition.files import find_photos, load_rgb, one_line, write_atomic, write_json_atomic

MULTI_MODES = ("largest", "all", "skip")
STATUSES = ("aligned", "several_faces", "no_face", "error")
REPORT_NAME = "align_report.json"
# (relative paths, decoded photos) -> per photo, the landmark arrays [5, 2] of its faces, main first.
LandmarkSource = Callable[[list[Path], list[np.ndarray]], list[list[np.ndarray]]]


@dataclass
class Outcome:
    """What happened to one photo: status, one-line reason, faces found, crops written (DST-relative)."""

    status: str
    reason: str = ""
    faces: int = 0
    outputs: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``align`` options (no heavy imports here: ``--help`` must stay fast)."""
    parser.add_argument("src", type=Path, help="folder of photos, searched recursively")
    parser.add_argument("dst", type=Path, help="output folder (must not overlap SRC)")
    parser.add_argument("--size", type=int, default=112, help="crop side in pixels (default 112)")
    parser.add_argument("--multi", choices=MULTI_MODES, default="largest",
                        help="photos with several faces: write the largest face by box area (default), all "
                             "faces as NAME_faceK.png (K = 0 for the best score), or skip them")
    add_device_option(parser)
    parser.add_argument("--landmarks", type=Path, metavar="FILE",
                        help="use a CelebA-style landmark list (list_landmarks_align_celeba.txt) "
                             "instead of face detection")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="photos decoded and detected together (equal sizes share a pass)")


def write_crops(image: np.ndarray, faces: Sequence[np.ndarray], rel: Path, dst: Path,
                size: int, multi: str) -> Outcome:
    """Align and save the faces of one photo; ``faces`` (at least one) are landmark arrays [5, 2],
    main face first."""
    from recognition.alignment import align_face

    count = len(faces)
    if count > 1 and multi == "skip":
        return Outcome("several_faces", f"{count} faces; skipped (--multi skip)", count)
    if multi == "all":
        names = [f"{rel.stem}_face{k}.png" for k in range(count)]
    else:
        names, faces = [f"{rel.stem}.png"], faces[:1]
    outputs = []
    for name, landmarks in zip(names, faces):
        crop = align_face(image, landmarks, size).crop
        target = rel.parent / name
        write_atomic(dst / target, lambda handle: Image.fromarray(crop).save(handle, format="PNG"))
        outputs.append(target.as_posix())
    if count == 1:
        return Outcome("aligned", "", 1, outputs)
    kept = "wrote all" if multi == "all" else "wrote the largest"
    return Outcome("several_faces", f"{count} faces; {kept}", count, outputs)


def _check_folders(src: Path, dst: Path) -> str | None:
    """Why SRC/DST cannot be used, or None when they can."""
    if not src.is_dir():
        return f"SRC {src} is not a folder"
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real.is_relative_to(src_real) or src_real.is_relative_to(dst_real):
        return f"SRC {src} and DST {dst} overlap; outputs could overwrite or be mistaken for photos"
    if dst.exists() and not dst.is_dir():
        return f"DST {dst} exists and is not a folder"
    return None


def _claim_outputs(photos: list[Path], outcomes: dict[str, Outcome]) -> list[Path]:
    """Photos whose output name is free; a clash (``a.jpg`` and ``a.png``) is the later one's error.

    Names are compared case-insensitively, as case-insensitive file systems would.
    """
    claimed: dict[str, str] = {}
    todo = []
    for rel in photos:
        stem = (rel.parent / rel.stem).as_posix()
        if stem.lower() in claimed:
            outcomes[rel.as_posix()] = Outcome(
                "error", f"output {stem}.png is already taken by {claimed[stem.lower()]}")
        else:
            claimed[stem.lower()] = rel.as_posix()
            todo.append(rel)
    return todo


def _landmark_source(args: argparse.Namespace) -> tuple[LandmarkSource, str]:
    """Landmarks from the ``--landmarks`` list or from MTCNN (largest face first for ``largest``),
    and the reason to report for a photo without any."""
    if args.landmarks is not None:
        from recognition.alignment import read_landmark_list

        table = read_landmark_list(args.landmarks)

        def listed(rels: list[Path], images: list[np.ndarray]) -> list[list[np.ndarray]]:
            # CelebA lists bare file names; a tree's relative path is tried first.
            found = [table.get(rel.as_posix(), table.get(rel.name)) for rel in rels]
            return [[] if landmarks is None else [landmarks] for landmarks in found]

        return listed, f"not in the landmark list {args.landmarks}"

    from recognition.detection import FaceDetector

    detector = FaceDetector(device=args.device)

    def detected(rels: list[Path], images: list[np.ndarray]) -> list[list[np.ndarray]]:
        batches = detector.detect_batch(images, batch_size=args.batch_size)
        if args.multi == "largest":
            batches = [sorted(faces, key=lambda face: face.area, reverse=True) for faces in batches]
        return [[face.landmarks for face in faces] for faces in batches]

    return detected, "no face detected"


def _align_chunk(chunk: list[Path], args: argparse.Namespace,
                 landmarks_of: LandmarkSource, no_face: str) -> dict[str, Outcome]:
    """Decode, locate and align a few photos; every failure becomes that photo's error outcome."""
    outcomes, loaded = {}, {}
    for rel in chunk:
        try:
            loaded[rel] = load_rgb(args.src / rel)
        except Exception as exc:  # any undecodable file: record it and go on
            outcomes[rel.as_posix()] = Outcome("error", one_line(exc))
    if not loaded:
        return outcomes
    try:
        found = landmarks_of(list(loaded), list(loaded.values()))
    except Exception as exc:  # e.g. out of GPU memory: the chunk fails, the run goes on
        return outcomes | {rel.as_posix(): Outcome("error", one_line(exc)) for rel in loaded}
    for (rel, image), faces in zip(loaded.items(), found):
        if not faces:
            outcomes[rel.as_posix()] = Outcome("no_face", no_face)
            continue
        try:
            outcomes[rel.as_posix()] = write_crops(image, faces, rel, args.dst, args.size, args.multi)
        except Exception as exc:  # one bad photo must not stop the run
            outcomes[rel.as_posix()] = Outcome("error", one_line(exc))
    return outcomes


def run(args: argparse.Namespace) -> int:
    """Align every photo of SRC into DST; 0 when all photos were handled, 1 on any error."""
    from tqdm.auto import tqdm

    if args.size < 1 or args.batch_size < 1:
        print("align: error: --size and --batch-size must be positive", file=sys.stderr)
        return 2
    problem = _check_folders(args.src, args.dst)
    if problem is None:
        try:
            landmarks_of, no_face = _landmark_source(args)
        except (OSError, ValueError, RuntimeError) as exc:  # bad list, unknown or absent device
            problem = one_line(exc)
    if problem is not None:
        print(f"align: error: {problem}", file=sys.stderr)
        return 2

    photos, outside = find_photos(args.src)
    outcomes = {rel.as_posix(): Outcome("error", "symlink to a file outside SRC; not followed")
                for rel in outside}
    todo = _claim_outputs(photos, outcomes)
    for rel, outcome in outcomes.items():
        print(f"align: {args.src / rel}: {outcome.reason}", file=sys.stderr)

    with tqdm(total=len(todo), unit="photo", desc="align", disable=None) as bar:
        for start in range(0, len(todo), args.batch_size):
            chunk = todo[start:start + args.batch_size]
            results = _align_chunk(chunk, args, landmarks_of, no_face)
            for rel, outcome in results.items():
                if outcome.status == "error":
                    tqdm.write(f"align: {args.src / rel}: {outcome.reason}", file=sys.stderr)
            outcomes.update(results)
            bar.update(len(chunk))

    counts = Counter(outcome.status for outcome in outcomes.values())
    report = {
        "src": str(args.src), "dst": str(args.dst), "size": args.size, "multi": args.multi,
        "landmarks": "mtcnn" if args.landmarks is None else str(args.landmarks),
        "counts": {status: counts[status] for status in STATUSES},
        "files": {rel: asdict(outcomes[rel]) for rel in sorted(outcomes)},
    }
    report_path = args.dst / REPORT_NAME
    write_json_atomic(report_path, report)
    crops = sum(len(outcome.outputs) for outcome in outcomes.values())
    print(f"align: {len(outcomes)} photos: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
          + f"; {crops} crops in {args.dst}; report {report_path}")
    return 1 if counts["error"] else 0
