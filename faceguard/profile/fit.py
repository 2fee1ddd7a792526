"""``faceguard fit``: train a protection profile on a corpus of identity folders (the paper's setting).

The data owner trains the surrogate on its own faces: every photo of ``CORPUS/<person>/…`` (or every
image of a grayscale faces ``.npz`` with ``images``/``labels``/``names``, such as the bundle's Yale B
and ORL) is detected with MTCNN and aligned to the ArcFace template at the profile's crop size,
exactly as ``faceguard protect`` will align the photos it protects; with ``aligned=True`` inputs are
taken as already aligned crops and only resized. Then an IR-ResNet backbone under a CosFace head is
trained with this project's trainer, the target gradient T (reverse cross-entropy, eval mode) is
taken over the backbone on the same crops, and both are saved as a profile
(:mod:`faceguard.profile.store`) with the corpus checksums and the command line.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from faceguard.gradients import target_gradient
from faceguard.losses import make_loss
from faceguard.profile.store import Profile, load_profile, save_profile
from recognition.alignment import align_face
from recognition.checkpoint import build_model
from recognition.datasets import ImageTensorDataset
from recognition.detection import FaceDetector
from recognition.device import resolve_device
from recognition.face_datasets import load_npz_faces
from recognition.files import file_sha256, find_photos, load_rgb, one_line
from recognition.losses import margin_cross_entropy_loss
from recognition.training import TrainConfig, train_classifier

NPZ_PAD = 0.25  # .npz faces are tight crops; see _crops


@dataclass
class CorpusSource:
    """What one corpus source contributed: images read, faces kept, checksum, skipped files."""

    path: str
    sha256: str
    images: int = 0
    faces: int = 0
    no_face: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class FitSettings:
    """Surrogate architecture and training recipe of a profile."""

    size: int = 64
    model: str = "ir18"
    width: float = 0.25
    embedding: int = 512
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.1
    seed: int = 0
    aligned: bool = False


def _folder_items(root: Path, source: CorpusSource) -> list[tuple[str, np.ndarray]]:
    """(identity, RGB photo) of every decodable photo under ``root/<identity>/``."""
    photos, outside = find_photos(root)
    source.errors += [f"{rel}: symlink outside the corpus; not followed" for rel in outside]
    items = []
    for rel in photos:
        if len(rel.parts) < 2:
            source.errors.append(f"{rel}: not inside an identity folder; skipped")
            continue
        try:
            items.append((rel.parts[0], load_rgb(root / rel)))
        except Exception as exc:  # a bad file is reported, the corpus goes on
            source.errors.append(f"{rel}: {one_line(exc)}")
    return items


def _npz_items(path: Path) -> list[tuple[str, np.ndarray]]:
    """(identity, gray face as HxWx3) of every image of a faces ``.npz`` (read without pickle)."""
    faces = load_npz_faces(path, channels=3)
    return [(faces.classes[int(label)], image.permute(1, 2, 0).numpy())
            for image, label in zip(faces.images, faces.labels)]


def _crops(items: list[tuple[str, np.ndarray]], settings: FitSettings, detector: FaceDetector | None,
           source: CorpusSource, pad: float = 0.0) -> list[tuple[str, np.ndarray]]:
    """Aligned size x size RGB crops (largest face of each image), or resized inputs if aligned.

    ``pad`` grows each image by that fraction of its side on every edge (edge pixels repeated)
    before detection: MTCNN misses most faces of tight crops such as Yale B's without it
    (measured: docs/protect.md, "The default profile").
    """
    size = settings.size
    if detector is None:
        return [(name, np.asarray(ImageOps.fit(Image.fromarray(image), (size, size),
                                               method=Image.Resampling.BICUBIC))) for name, image in items]
    if pad:  # tight face crops: MTCNN needs some context around a face to find it
        items = [(name, np.pad(image, ((round(pad * image.shape[0]),) * 2, (round(pad * image.shape[1]),) * 2,
                                       (0, 0)), mode="edge")) for name, image in items]
    crops = []
    found = detector.detect_batch([image for _, image in items])
    for (name, image), faces in zip(items, found):
        if not faces:
            source.no_face += 1
            continue
        main = max(faces, key=lambda face: face.area)
        crops.append((name, align_face(image, main.landmarks, size).crop))
    return crops


def load_corpus(paths: Sequence[Path], settings: FitSettings, device: str = "auto"
                ) -> tuple[ImageTensorDataset, list[CorpusSource]]:
    """All aligned training crops of the corpus sources; identities with the same name are merged."""
    detector = None if settings.aligned else FaceDetector(device=device)
    crops: list[tuple[str, np.ndarray]] = []
    sources = []
    for path in map(Path, paths):
        if path.is_dir():
            source = CorpusSource(str(path), "")
            items = _folder_items(path, source)
            listing = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.is_symlink())
            source.sha256 = _listing_digest(path, listing)
        elif path.suffix.lower() == ".npz":
            source = CorpusSource(str(path), file_sha256(path))
            items = _npz_items(path)
        else:
            raise ValueError(f"corpus {path} is neither a folder of identity folders nor a .npz file")
        source.images = len(items)
        found = _crops(items, settings, detector, source, pad=NPZ_PAD if path.suffix.lower() == ".npz" else 0.0)
        source.faces = len(found)
        crops += found
        sources.append(source)
    if not crops:
        raise ValueError("the corpus holds no usable face")
    classes = sorted({name for name, _ in crops})
    index = {name: i for i, name in enumerate(classes)}
    images = torch.from_numpy(np.stack([crop for _, crop in crops])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([index[name] for name, _ in crops], dtype=torch.int64)
    return ImageTensorDataset(images, labels, classes), sources


def _listing_digest(root: Path, files: list[str]) -> str:
    """SHA-256 over (relative path, file SHA-256) of every file of a folder: one checksum per tree."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{Path(name).relative_to(root).as_posix()}\0{file_sha256(name)}\n".encode())
    return digest.hexdigest()


def fit_profile(paths: Sequence[Path], out: Path, settings: FitSettings, device: str = "auto",
                command: str = "", progress: bool = True) -> Profile:
    """Build the corpus, train the surrogate, take T over its backbone and save the profile at ``out``."""
    dev = resolve_device(device)
    dataset, sources = load_corpus(paths, settings, device=str(dev))
    for source in sources:
        for error in source.errors:
            print(f"fit: {source.path}: {error}", file=sys.stderr)
    if len(dataset.classes) < 2:
        raise ValueError("the corpus needs at least two identities (CosFace is a classifier)")
    model_config = {"model": settings.model, "width": settings.width, "num_classes": settings.embedding,
                    "model_kwargs": {"input_size": settings.size}, "head": "cosface",
                    "head_classes": len(dataset.classes)}
    torch.manual_seed(settings.seed)
    model = build_model(model_config)
    config = TrainConfig(epochs=settings.epochs, batch_size=min(settings.batch_size, len(dataset)),
                         lr=settings.lr, schedule="cosine", augment="flip", seed=settings.seed)
    history = train_classifier(model, dataset, config, device=dev, progress=progress,
                               loss_fn=margin_cross_entropy_loss)
    model.eval()
    target = target_gradient(model, dataset, params=list(model.backbone.parameters()),
                             loss_fn=make_loss("rce", label_in_forward=True), batch_size=128)
    record = {
        "model": model_config, "input_size": settings.size, "classes": dataset.classes,
        "target": {"loss": "rce", "params": "backbone", "images": len(dataset)},
        "training": {"settings": asdict(settings), "final_epoch": history[-1]},
        "provenance": {"command": command, "corpus": [asdict(source) for source in sources]},
    }
    save_profile(out, model, target, record)
    return load_profile(out, dev)
