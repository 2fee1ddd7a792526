"""Target identities for ``faceguard protect --method target`` (Fawkes-style targeted evasion).

A target is another person's face, known to the recognizers, that a protected face is pulled
toward: a recognizer that enrolls the protected photo then files it near that other person, not
near the user's own clean photos. Targets come from a folder the user gives (``--targets DIR``,
one sub-folder of photos per person, e.g. public figures), never from the photos being protected.

Each target person's centre is measured in every recognizer of the crafting ensemble as a scraper
would see the photos: the best-scoring MTCNN face of each photo, cut as that recognizer's own
pipeline cuts it (:func:`faceguard.protect.evasion.saved_views`), the unit mean over the person's
photos. Each face is then pulled toward the person whose centre is least similar to the face's
clean embeddings (mean cosine over the members; :func:`faceguard.attacks.evasion.farthest_anchors`),
so every photo is protected on its own and photos of one person mostly share a target.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from faceguard.attacks.evasion import farthest_anchors
from faceguard.protect.evasion import saved_views
from faceguard.protect.photo import colour_and_alpha, read_photo
from recognition.files import file_sha256, find_photos, one_line


@dataclass
class TargetSet:
    """The target people (``names``), each member's [K, D] unit centres of them (ensemble order),
    and ``sha256``, a digest of the folder's listing (person, file, file SHA-256) that the protect
    manifest keeps so a different target folder protects the photos again."""

    names: list[str]
    centres: list[Tensor]
    sha256: str

    def choose(self, anchors: list[Tensor]) -> tuple[list[Tensor], list[str]]:
        """For faces with clean unit embeddings ``anchors`` (per member [n, D]): each member's [n, D]
        target anchors and each face's target person."""
        if len(anchors) != len(self.centres):
            raise ValueError(f"{len(anchors)} recognizers embed the faces but the targets have {len(self.centres)}")
        targets, choice = farthest_anchors(anchors, [c.to(a.device) for c, a in zip(self.centres, anchors)])
        return targets, [self.names[int(k)] for k in choice]


def load_targets(folder: str | Path, protector) -> TargetSet:
    """The target people of ``folder`` (``DIR/<person>/<photos>``) in ``protector``'s ensemble.

    A photo that cannot be read, or shows no face, is reported on stderr (one line naming it) and
    left out; so is a person left with no face. Raises ValueError when no person remains.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: the targets must be a folder with one sub-folder of photos per person")
    if not protector.ensemble:
        raise ValueError(f"target identities are embedded by an evasion method's ensemble, not {protector.settings.method}")
    names, centres, listing = [], [], []
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        embeddings = []
        for rel in find_photos(person)[0]:
            path = person / rel
            try:
                embedding = _face_embeddings(protector, path)
                digest = file_sha256(path)
            except Exception as exc:  # one bad photo must not stop the run
                print(f"protect: targets: {path}: {one_line(exc)}", file=sys.stderr)
                continue
            if embedding is None:
                print(f"protect: targets: {path}: no face detected", file=sys.stderr)
                continue
            embeddings.append(embedding)
            listing.append((person.name, rel.as_posix(), digest))
        if embeddings:
            names.append(person.name)
            centres.append([F.normalize(torch.cat(member).mean(0), dim=0) for member in zip(*embeddings)])
        else:
            print(f"protect: targets: {person}: no photo with a face; not a target", file=sys.stderr)
    if not names:
        raise ValueError(f"{folder}: no face found in any person's photos; --targets needs DIR/<person>/<photos>")
    stacked = [torch.stack(member) for member in zip(*centres)]
    return TargetSet(names, stacked, hashlib.sha256(json.dumps(listing).encode()).hexdigest())


def _face_embeddings(protector, path: Path) -> list[Tensor] | None:
    """Each ensemble member's [1, D] unit embedding of the photo's best-scoring face (None: no face)."""
    pixels = read_photo(path).pixels
    faces = protector.detect(pixels)
    if not faces:
        return None
    colour = colour_and_alpha(pixels)[0]
    return [e.cpu() for e in saved_views(colour, [faces[0].landmarks], protector.ensemble, protector.device)]
