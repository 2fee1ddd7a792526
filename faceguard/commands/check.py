"""``faceguard check ORIGINALS PROTECTED``: does a real pretrained recognizer still match each protected
photo to its person? Exit 0 when every protected photo evades it, 1 when any still matches."""
from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

from faceguard.protect.check import CAVEAT, CHECK_IDENTITIES, MODEL, THRESHOLD, CheckResult, PhotoCheck
from recognition.cli import add_device_option

DESCRIPTION = f"""\
Run dlib's pretrained face-recognition ResNet ({MODEL}) on every original/protected pair, as a
scraper would (MTCNN's largest face, a dlib face chip, a 128-d descriptor), and say per photo and
per person whether the protected photo is still matched to the person (distance below {THRESHOLD:g}
to one of their other clean photos in ORIGINALS; to its own original when the person has only one
photo). Also reports which person's clean photo is nearest to each protected photo.

Exit status: 0 when every protected photo evades the model, 1 when any still matches or a pair
could not be checked, 2 on usage errors.

{textwrap.fill(f"Note: {CAVEAT}.", 100)}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("originals", type=Path, help="folder given to faceguard protect (or one photo)")
    parser.add_argument("protected", type=Path, help="folder written by faceguard protect (or one photo)")
    parser.add_argument("--identities", choices=CHECK_IDENTITIES, default="folders",
                        help="folders: ORIGINALS/<person>/ sub-folders are people (photos directly in "
                             "ORIGINALS stand alone); single: everything is one person")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help="same-person distance: closer still matches (dlib's value; higher is a stricter "
                             "test of the protection)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the full result as JSON")
    add_device_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _distance(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _row(photo: PhotoCheck) -> list[str]:
    if photo.status in ("no_face", "error"):
        return [photo.rel, photo.person or "-", "-", "-", "-", "-", f"{photo.status.replace('_', ' ')}: {photo.reason}"]
    matched = (f"{round(photo.person_matched * photo.other_photos)}/{photo.other_photos}"
               if photo.other_photos else "only photo")
    nearest = f"{photo.nearest_person or photo.nearest_photo} {_distance(photo.nearest_distance)}" \
        if photo.nearest_photo else "-"
    return [photo.rel, photo.person or "-", _distance(photo.own_distance), _distance(photo.person_distance),
            matched, nearest, "MATCHES" if photo.matched else "evades"]


def table(result: CheckResult) -> list[str]:
    """One line per photo, columns aligned."""
    rows = [["photo", "person", "own", "others", "matched", "nearest", "verdict"]]
    rows += [_row(photo) for photo in result.photos]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]


def people_lines(result: CheckResult) -> list[str]:
    """One summary line per person."""
    lines = []
    for person in result.people:
        checked = person.matches + person.evades
        text = (f"check: {person.name}: {person.matches} of {checked} protected photos still match" if checked
                else f"check: {person.name}: no protected photo could be compared")
        if person.identifiable:
            text += f"; nearest clean photo is theirs for {person.identified} of {person.identifiable}"
        if person.own_only:
            text += f"; {person.own_only} compared with its own original only (no other clean photo of them)"
        skipped = [f"{count} {what}" for count, what in
                   ((person.no_face, "no face"), (person.errors, "error" if person.errors == 1 else "errors")) if count]
        lines.append(text + (f" ({', '.join(skipped)})" if skipped else ""))
    return lines


def run(args: argparse.Namespace) -> int:
    from faceguard.protect.check import check_folders
    from recognition.files import write_json_atomic

    start = time.perf_counter()
    result = check_folders(args.originals, args.protected, args.identities, threshold=args.threshold,
                           device=args.device, progress=not args.quiet)
    seconds = time.perf_counter() - start
    for photo in result.photos:
        if photo.status == "error":
            print(f"check: {photo.problem_file}: {photo.reason}", file=sys.stderr)
    print("\n".join(table(result)))
    print("\n".join(people_lines(result)))
    print(f"{result.summary_line()}; {seconds:.1f} s")
    if args.json is not None:
        write_json_atomic(args.json, result.to_dict() | {"command": args.command_line, "seconds": round(seconds, 2)})
        print(f"check: wrote {args.json}")
    print(f"check: note: {CAVEAT}")
    return result.exit_code
