"""Does a real pretrained face recognizer still match protected photos to their person?

The recognizer is dlib's face-recognition ResNet (``dlib-resnet``, :mod:`recognition.models.dlib_resnet`)
as a scraper would run it: MTCNN finds the main (largest) face of a photo, a dlib face chip is cut
from MTCNN's five points (:func:`recognition.face_chip.mtcnn_face_chip`) and the network maps it
to a 128-d descriptor; two faces are the same person when their descriptors lie closer than 0.6
(Euclidean, dlib's threshold).

For every (original, protected) pair (:func:`faceguard.protect.verify.find_pairs`) this measures:

- ``own_distance``: protected photo vs its own original;
- ``person_distance``: the smallest distance from the protected photo to the person's *other* clean
  photos in ORIGINALS (people as in ``faceguard protect --identities``: ``folders`` or ``single``),
  and ``person_matched``, the fraction of those photos it matches. The photo still *matches* its
  person when that distance is below the threshold. A person with one photo (with a face) has no
  other clean photos: the own-original distance decides instead (``basis``);
- nearest identity: the person of the clean photo nearest to the protected one (its own original
  left out): closed-set identification, ``identified`` when that is the photo's own person.

Passing this check is optimistic (:data:`CAVEAT`): it covers one known model, the clean photos
given, and an attacker who neither fine-tunes nor trains robustly on the protected photos.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from faceguard.protect.verify import OUTSIDE, Pair, find_pairs
from recognition.files import file_sha256, load_rgb, one_line

MODEL = "dlib-resnet"
THRESHOLD = 0.6  # dlib_resnet.SAME_PERSON_THRESHOLD, kept here so importing this module (--help) needs no torch
CHECK_IDENTITIES = ("folders", "single")
STATUSES = ("matches", "evades", "no_face", "error")
LABELS = ("still match", "evade", "no face", "errors")  # how summaries name STATUSES
COUNTERS = {"matches": "matches", "evades": "evades", "no_face": "no_face", "error": "errors"}  # PersonCheck field
NO_FACE = "no face detected"
CAVEAT = (f"passing this check against one known model ({MODEL}) is optimistic: other recognizers, "
          "other photos of the person already online, and robust training are not covered")


@dataclass(eq=False)
class Described:
    """The recognizer's view of one file: the main face's descriptor (None when there is none),
    how many faces MTCNN found, the main face's box and five points (so another recognizer can
    align the same face without detecting again), and ``problem`` ("no face detected" or a
    one-line error)."""

    descriptor: np.ndarray | None
    faces: int = 0
    box: list[float] | None = None
    problem: str = ""
    landmarks: np.ndarray | None = None

    @property
    def error(self) -> bool:
        return bool(self.problem) and self.problem != NO_FACE


class FaceDescriber:
    """MTCNN (largest face) → dlib chip from its five points → dlib-resnet descriptor, per file.

    Results are kept by file SHA-256, so a file identical to one already described (an unchanged
    copy, or the same originals checked against several protected trees) costs nothing.
    """

    def __init__(self, device: str = "auto", batch_size: int = 32) -> None:
        from recognition.detection import FaceDetector
        from recognition.device import resolve_device
        from recognition.models import create_model

        self.device = resolve_device(device)
        self.detector = FaceDetector(device=self.device)
        self.model = create_model(MODEL).to(self.device)
        self.batch_size = batch_size
        self._known: dict[str, Described] = {}

    def describe(self, paths: Sequence[Path], progress: bool = False) -> list[Described]:
        """One :class:`Described` per path, in order; a bad file is an error entry, never a raise."""
        from tqdm.auto import tqdm

        keys: list[str | Described] = []
        chips: dict[str, np.ndarray] = {}
        for path in tqdm(paths, unit="photo", desc="check", disable=not progress or None):
            try:
                key = file_sha256(path)
            except OSError as exc:
                keys.append(Described(None, problem=one_line(exc)))
                continue
            keys.append(key)
            if key not in self._known:
                try:
                    self._known[key], chip = self._detect(path)
                except Exception as exc:  # undecodable or unreadable: reported, the run goes on
                    self._known[key], chip = Described(None, problem=one_line(exc)), None
                if chip is not None:
                    chips[key] = chip
                if len(chips) == self.batch_size:  # embed as batches fill: chips never pile up
                    self._embed(chips)
        self._embed(chips)
        return [key if isinstance(key, Described) else self._known[key] for key in keys]

    def _detect(self, path: Path) -> tuple[Described, np.ndarray | None]:
        from recognition.face_chip import mtcnn_face_chip

        image = load_rgb(path)
        faces = self.detector.detect(image)
        if not faces:
            return Described(None, problem=NO_FACE), None
        main = max(faces, key=lambda face: face.area)
        box = [round(float(v), 1) for v in main.box]
        return Described(None, len(faces), box, landmarks=main.landmarks), mtcnn_face_chip(image, main.landmarks)

    def _embed(self, chips: dict[str, np.ndarray]) -> None:
        """Descriptors of the pending ``chips`` (one batch), stored with their files; empties ``chips``."""
        import torch

        if chips:
            x = torch.from_numpy(np.stack(list(chips.values()))).permute(0, 3, 1, 2)
            with torch.no_grad():
                out = self.model(x.to(self.device).float() / 255).double().cpu().numpy()
            for key, descriptor in zip(chips, out):
                self._known[key].descriptor = descriptor
            chips.clear()


@dataclass
class PhotoCheck:
    """One pair's outcome: ``status`` is one of :data:`STATUSES`, ``reason`` says why when it is
    ``no_face`` or ``error``; distances are None where they could not be measured."""

    rel: str
    original: str
    protected: str | None
    person: str | None
    status: str = "error"
    reason: str = ""
    basis: str = ""  # "other photos" or "own original": what decided ``matched``
    own_distance: float | None = None
    person_distance: float | None = None
    person_matched: float | None = None  # fraction of the person's other clean photos matched
    other_photos: int = 0
    person_distances: dict[str, float] = field(default_factory=dict)
    nearest_photo: str | None = None
    nearest_person: str | None = None
    nearest_distance: float | None = None
    identified: bool | None = None
    faces: int = 0  # faces MTCNN found in the protected photo
    matched: bool | None = None
    problem_file: str | None = None  # the file an ``error`` is about


@dataclass
class PersonCheck:
    """Per person: pairs, how many still match / evade / have no face / failed, and how many are
    identified by nearest clean photo (of ``identifiable``: those with other clean photos)."""

    name: str
    photos: int = 0
    matches: int = 0
    evades: int = 0
    no_face: int = 0
    errors: int = 0
    identified: int = 0
    identifiable: int = 0
    own_only: int = 0  # compared with their own original only: no other clean photo of the person


@dataclass
class CheckResult:
    """Everything ``faceguard check`` reports; :meth:`to_dict` is its ``--json``."""

    originals: str
    protected: str
    identities: str
    threshold: float
    photos: list[PhotoCheck]
    people: list[PersonCheck]
    model: str = MODEL

    def count(self, status: str) -> int:
        return sum(photo.status == status for photo in self.photos)

    @property
    def exit_code(self) -> int:
        """0 when at least one photo was compared and none matches or failed, else 1."""
        compared = self.count("matches") + self.count("evades")
        return 1 if self.count("matches") or self.count("error") or not compared else 0

    def summary_line(self) -> str:
        counts = ", ".join(f"{self.count(status)} {label}" for status, label in zip(STATUSES, LABELS))
        return f"check: {len(self.photos)} pairs: {counts} ({self.model}, same person below {self.threshold:g})"

    def to_dict(self) -> dict:
        return {"model": self.model, "threshold": self.threshold, "identities": self.identities,
                "originals": self.originals, "protected": self.protected,
                "counts": {status: self.count(status) for status in STATUSES}, "exit_code": self.exit_code,
                "people": [asdict(person) for person in self.people],
                "photos": [asdict(photo) for photo in self.photos], "caveat": CAVEAT}


def _round(value: float) -> float:
    return round(float(value), 4)


def _compare(check: PhotoCheck, probe: np.ndarray, own: np.ndarray, gallery: list[tuple[str, str | None]],
             descriptors: np.ndarray, threshold: float) -> None:
    """Fill ``check``'s distances and verdict from the protected descriptor ``probe``."""
    check.own_distance = _round(np.linalg.norm(probe - own))
    distances = np.linalg.norm(descriptors - probe, axis=1)
    others = [i for i, (rel, person) in enumerate(gallery)
              if rel != check.rel and person is not None and person == check.person]
    check.other_photos = len(others)
    if others:
        near = distances[others]
        check.basis, check.person_distance = "other photos", _round(near.min())
        check.person_matched = _round((near < threshold).mean())
        check.person_distances = {gallery[i][0]: _round(distances[i]) for i in others}
        check.matched = bool(near.min() < threshold)
    else:
        check.basis, check.matched = "own original", bool(check.own_distance < threshold)
    rest = [i for i, (rel, _) in enumerate(gallery) if rel != check.rel]
    if rest:
        nearest = rest[int(np.argmin(distances[rest]))]
        check.nearest_photo, check.nearest_person = gallery[nearest]
        check.nearest_distance = _round(distances[nearest])
        if others:
            check.identified = check.nearest_person == check.person
    check.status = "matches" if check.matched else "evades"


def _failure(pair: Pair, before: Described | None, now: Described | None) -> tuple[str, str] | None:
    """(file, one-line reason) when a pair cannot be compared because of a file, else None."""
    if pair.problem:
        return str(pair.original), pair.problem
    if before.error:
        return str(pair.original), f"original: {before.problem}"
    if now.error:
        return str(pair.protected), f"protected: {now.problem}"
    return None


def check_folders(originals: Path, protected: Path, identities: str = "folders",
                  describer: FaceDescriber | None = None, threshold: float = THRESHOLD,
                  device: str = "auto", progress: bool = False) -> CheckResult:
    """Check every photo under ``originals`` (a folder, or one photo) against its protected
    counterpart in ``protected``, as the module doc describes."""
    from faceguard.protect.identities import identity_key

    originals, protected = Path(originals), Path(protected)
    if identities not in CHECK_IDENTITIES:
        raise ValueError(f"identities must be one of {', '.join(CHECK_IDENTITIES)}, got {identities!r}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if not protected.exists():
        raise FileNotFoundError(f"{protected} does not exist")
    pairs = find_pairs(originals, protected)
    if not pairs:
        raise ValueError(f"no photos (JPEG, PNG, WebP, BMP, TIFF) under {originals}")
    describer = describer or FaceDescriber(device)
    root_name = (originals if originals.is_dir() else originals.parent).resolve().name
    readable = [pair for pair in pairs if pair.problem != OUTSIDE]
    clean = dict(zip((pair.rel for pair in readable),
                     describer.describe([pair.original for pair in readable], progress)))
    found = [pair for pair in pairs if pair.protected is not None]
    after = dict(zip((pair.rel for pair in found), describer.describe([pair.protected for pair in found], progress)))
    gallery = [(pair.rel.as_posix(), identity_key(pair.rel, identities, root_name))
               for pair in readable if clean[pair.rel].descriptor is not None]
    descriptors = np.stack([clean[Path(rel)].descriptor for rel, _ in gallery]) if gallery else np.zeros((0, 128))
    photos = []
    for pair in pairs:
        check = PhotoCheck(pair.rel.as_posix(), str(pair.original), pair.protected and str(pair.protected),
                           identity_key(pair.rel, identities, root_name))
        photos.append(check)
        before, now = clean.get(pair.rel), after.get(pair.rel)
        failure = _failure(pair, before, now)
        if failure:
            check.problem_file, check.reason = failure
            continue
        check.faces = now.faces
        if before.descriptor is None:
            check.status, check.reason = "no_face", "no face detected in the original"
        elif now.descriptor is None:
            check.status, check.matched = "no_face", False
            check.reason = "no face detected in the protected photo (the original has one)"
        else:
            _compare(check, now.descriptor, before.descriptor, gallery, descriptors, threshold)
    return CheckResult(str(originals), str(protected), identities, threshold, photos, summarise(photos))


def summarise(photos: list[PhotoCheck]) -> list[PersonCheck]:
    """One :class:`PersonCheck` per person (unlabelled photos together), sorted by name."""
    people: dict[str, PersonCheck] = {}
    for photo in photos:
        name = photo.person if photo.person is not None else "(unlabelled)"
        person = people.setdefault(name, PersonCheck(name))
        person.photos += 1
        counter = COUNTERS[photo.status]
        setattr(person, counter, getattr(person, counter) + 1)
        person.own_only += photo.basis == "own original"
        if photo.identified is not None:
            person.identifiable += 1
            person.identified += photo.identified
    return [people[name] for name in sorted(people)]
