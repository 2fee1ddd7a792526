"""Recognizers the ``recognizers`` benchmark asks, and their embeddings of photo files.

Every recognizer sees a photo as a scraper would: MTCNN's largest face
(:class:`faceguard.protect.check.FaceDescriber`, which also gives dlib-resnet's descriptor), then
the recognizer's own alignment of that face's five points and its network. Adding a recognizer is
one :data:`RECOGNIZERS` entry: a factory ``device → Describer`` whose ``describe(paths, found)``
returns one embedding (or None) per file from the files and their detections (a network on one
crop of the main face: a :class:`CropDescriber` with its ``crop``).

Embeddings are cached in ``WORK/embeddings.json`` by file SHA-256 and recognizer (with the
recognizer's ``version``, e.g. the profile's SHA-256, so a changed model is not read stale).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from recognition.files import file_sha256, write_json_atomic

if TYPE_CHECKING:
    import torch

    from faceguard.protect.check import Described


class Describer(Protocol):
    """A loaded recognizer: ``version`` names the exact weights; ``describe`` embeds files."""

    version: str

    def describe(self, paths: Sequence[Path], found: Sequence) -> list[np.ndarray | None]: ...


@dataclass(frozen=True)
class Recognizer:
    """A recognizer of the benchmark: how it compares embeddings (``euclidean`` distance below
    ``threshold``, or ``cosine`` similarity at least ``threshold``, fitted on clean photos of other
    people when ``threshold`` is None), a line for the report, and its loader. Which protections
    craft with it is theirs to say (``benchmarks.recognizers.crafted_with``). ``held_out``: no
    setting of any protection was ever chosen on its rows (the others were tuned on, white-box or not)."""

    metric: str
    threshold: float | None
    note: str
    load: Callable[[str], Describer]
    held_out: bool = False


class DlibDescriber:
    """dlib-resnet: the descriptor :class:`FaceDescriber` already computed for the main face."""

    version = "dlib_face_recognition_resnet_model_v1"

    def describe(self, paths: Sequence[Path], found: Sequence) -> list[np.ndarray | None]:
        return [d.descriptor for d in found]


class CropDescriber:
    """A network on one crop per file of the main face MTCNN found (:class:`FaceDescriber` gives its
    box and five points together), embedded 32 crops at a time; :meth:`crop` cuts it."""

    def __init__(self, network, device: str, version: str) -> None:
        self.network, self.device, self.version = network, device, version

    def crop(self, image: np.ndarray, face: Described) -> torch.Tensor:
        """The network's [3, H, W] input in [0, 1] for ``face`` of an RGB image."""
        raise NotImplementedError

    def describe(self, paths: Sequence[Path], found: Sequence) -> list[np.ndarray | None]:
        import torch

        from recognition.files import load_rgb

        out: list[np.ndarray | None] = [None] * len(paths)
        todo = [k for k, d in enumerate(found) if d.landmarks is not None and d.box is not None]
        for start in range(0, len(todo), 32):
            batch = todo[start:start + 32]
            crops = torch.stack([self.crop(load_rgb(paths[k]), found[k]) for k in batch])
            with torch.no_grad():
                embedding = self.network(crops.to(self.device)).double().cpu().numpy()
            for k, row in zip(batch, embedding):
                out[k] = row
        return out


class ArcFaceCropDescriber(CropDescriber):
    """A network on the ArcFace-aligned crop of its input size (:func:`recognition.alignment.align_face`
    of MTCNN's five points), as ``Protector.embed`` and ``cv2.FaceRecognizerSF`` feed theirs."""

    def __init__(self, network, size: int, device: str, version: str) -> None:
        super().__init__(network, device, version)
        self.size = size

    def crop(self, image: np.ndarray, face: Described) -> torch.Tensor:
        from faceguard.protect.warp import as_channels_first
        from recognition.alignment import align_face

        return as_channels_first(align_face(image, face.landmarks, self.size).crop)


class FaceNetCropDescriber(CropDescriber):
    """facenet-casia on MTCNN's box grown by a margin (:func:`recognition.models.facenet_casia.crop_face`,
    facenet-pytorch's ``extract_face``), the crop Sandberg's FaceNet was trained on; version: the
    graph file's SHA-256."""

    def __init__(self, device: str) -> None:
        from recognition.device import resolve_device
        from recognition.models import create_model
        from recognition.models.facenet_casia import graph_path

        device = resolve_device(device)
        super().__init__(create_model("facenet-casia").to(device), device, file_sha256(graph_path()))

    def crop(self, image: np.ndarray, face: Described) -> torch.Tensor:
        from recognition.models.facenet_casia import crop_face

        return crop_face(image, face.box)


def profile_describer(device: str) -> ArcFaceCropDescriber:
    """The default profile's backbone (IR-18, 512-d) on its own crop size."""
    from faceguard.profile.store import load_profile
    from recognition.device import resolve_device

    device = resolve_device(device)
    profile = load_profile(None, device)
    return ArcFaceCropDescriber(profile.backbone, profile.input_size, device, profile.sha256)


def onnx_describer(name: str) -> Callable[[str], ArcFaceCropDescriber]:
    """Loader of an ONNX-packaged recognizer (``sface``, ``insightface-mbf``, ``edgeface-s``) on its 112 x 112
    ArcFace crop; version: the ONNX file's SHA-256."""

    def load(device: str) -> ArcFaceCropDescriber:
        from recognition.device import resolve_device
        from recognition.models import create_model
        from recognition.models.onnx_recognizers import INPUT_SIZE, weights_path

        device = resolve_device(device)
        return ArcFaceCropDescriber(create_model(name).to(device), INPUT_SIZE, device, file_sha256(weights_path(name)))

    return load


RECOGNIZERS: dict[str, Recognizer] = {
    "dlib-resnet": Recognizer("euclidean", 0.6, "dlib's face ResNet (128-d, MTCNN chip)",
                              lambda device: DlibDescriber()),
    "profile": Recognizer("cosine", None, "the default profile's backbone (IR-18, 512-d, 64² ArcFace crop; "
                          "the alignment surrogate)", profile_describer),
    "sface": Recognizer("cosine", 0.363, "OpenCV Zoo's SFace (MobileFaceNet, MS1M, 128-d, 112² ArcFace "
                        "crop, OpenCV's cosine threshold 0.363)", onnx_describer("sface")),
    "insightface-mbf": Recognizer("cosine", None, "InsightFace's w600k_mbf (MobileFaceNet, ArcFace loss, "
                                  "WebFace600K, 512-d, 112² ArcFace crop; non-commercial weights, used only to "
                                  "measure)", onnx_describer("insightface-mbf")),
    "edgeface-s": Recognizer("cosine", None, "Idiap's EdgeFace-S γ=0.5 (CNN-transformer, WebFace, 512-d, 112² "
                             "ArcFace crop; research weights, used only to measure)", onnx_describer("edgeface-s")),
    "facenet-casia": Recognizer("cosine", None, "Sandberg's FaceNet (Inception-ResNet-v1, CASIA-WebFace, 512-d, "
                                "160² MTCNN box crop with margin; MIT weights, research training data, used only "
                                "to measure; **held out**: chosen in session 20 before any setting was tried, "
                                "never used to choose one)", FaceNetCropDescriber, held_out=True),
}


class Embeddings:
    """Embeddings of files by every chosen recognizer, detected once, cached in ``path``."""

    def __init__(self, names: Sequence[str], device: str, path: Path) -> None:
        from faceguard.protect.check import FaceDescriber

        self.names, self.path = list(names), path
        self.finder = FaceDescriber(device)
        self.models = {name: RECOGNIZERS[name].load(device) for name in self.names}
        stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        self.faces: dict[str, dict] = stored.get("faces", {})
        self.cache: dict[str, dict] = {}
        for name, model in self.models.items():
            kept = stored.get("recognizers", {}).get(name, {})
            self.cache[name] = kept.get("embeddings", {}) if kept.get("version") == model.version else {}

    def embed(self, paths: Sequence[Path]) -> dict[str, list[np.ndarray | None]]:
        """Recognizer name → one embedding (None: no face, or an unreadable file) per path."""
        keys = [file_sha256(path) for path in paths]
        missing = {key: path for key, path in zip(keys, paths)
                   if any(key not in self.cache[name] for name in self.names)}
        if missing:
            files = list(missing.values())
            found = self.finder.describe(files)
            for name, model in self.models.items():
                for key, vector in zip(missing, model.describe(files, found)):
                    self.cache[name][key] = None if vector is None else [round(float(v), 6) for v in vector]
            for key, described in zip(missing, found):
                self.faces[key] = {"faces": described.faces, "box": described.box, "problem": described.problem}
            self.save()
        return {name: [None if self.cache[name][key] is None else np.asarray(self.cache[name][key])
                       for key in keys] for name in self.names}

    def box(self, path: Path) -> list[float] | None:
        """The main face's box in ``path`` (after :meth:`embed` saw it), None without a face."""
        return self.faces.get(file_sha256(path), {}).get("box")

    def save(self) -> None:
        write_json_atomic(self.path, {"faces": self.faces, "recognizers": {
            name: {"version": self.models[name].version, "embeddings": self.cache[name]} for name in self.names}})


def similarity(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """[len(a), len(b)] similarities, larger = more alike: cosine, or minus the Euclidean distance."""
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return a @ b.T
    return -np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)


def impostor_threshold(vectors: np.ndarray, people: Sequence[str], metric: str, far: float) -> float | None:
    """The similarity exceeded by a fraction ``far`` of the pairs of different people among
    ``vectors`` (None when there is no such pair)."""
    sims = similarity(vectors, vectors, metric)
    labels = np.asarray(people)
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1) & (labels[:, None] != labels[None, :])
    values = sims[upper]
    return float(np.quantile(values, 1 - far)) if values.size else None


def person_thresholds(recognizer: Recognizer, vectors: np.ndarray, people: Sequence[str],
                      far: float) -> dict[str, float]:
    """Same-person threshold (in :func:`similarity` units) used for each person.

    A fixed threshold (dlib's 0.6) applies to everyone. A fitted one is, for each person, the
    FAR-``far`` threshold of the clean impostor pairs among all *other* people
    (leave-one-person-out): nothing about the person measured enters their threshold.
    """
    names = sorted(set(people))
    if recognizer.threshold is not None:
        value = -recognizer.threshold if recognizer.metric == "euclidean" else recognizer.threshold
        return {name: value for name in names}
    labels = np.asarray(people)
    out = {}
    for name in names:
        others = labels != name
        value = impostor_threshold(vectors[others], labels[others].tolist(), recognizer.metric, far)
        if value is None:
            raise ValueError(f"fitting a threshold for {name} needs photos of two other people")
        out[name] = value
    return out
