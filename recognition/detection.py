"""Face detection with facenet-pytorch's MTCNN: box, score and the five landmarks of every face.

MTCNN is the detector that produced the landmarks of most public face-recognition training sets
(CASIA-WebFace, MS1M as aligned by insightface), so aligning with it reproduces their crops. Its
weights ship inside the facenet-pytorch wheel (nothing is downloaded) and are read with
``torch.load``, which since torch 2.6 defaults to ``weights_only=True``: loading cannot execute code.

facenet-pytorch 2.6.0 pins an old torch/numpy but its detection path works with the pinned torch
and numpy 2 (checked by the tests). Two of its quirks are handled here rather than patched:
``MTCNN.detect`` returns ``None`` for an image without faces and packs per-image results into numpy
*object* arrays whose shape depends on how many faces each image has, so every per-image entry is
converted to plain float arrays on its own. It also only batches images of one size, so
``detect_batch`` groups images by size.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from recognition.device import resolve_device

ImageLike = Image.Image | np.ndarray

@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in image pixel coordinates.

    ``box`` is float32 [4] = x1, y1, x2, y2; ``landmarks`` is float32 [5, 2] of (x, y) in MTCNN's
    order: left eye, right eye, nose, left mouth corner, right mouth corner ("left" = smaller x in
    the image for a frontal face). ``eq=False``: arrays have no single truth value, so faces
    compare by identity.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in pixels², used to pick the main face of a photo."""
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """HxWx3 uint8 RGB array of a PIL image (any mode) or of an HxWx3 uint8 array (passed as is)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {array.dtype} {array.shape}")
    return array


class FaceDetector:
    """MTCNN (all faces kept) on CPU or CUDA, returning :class:`Face` lists sorted by score.

    ``min_face_size`` (pixels) and ``thresholds`` (the three cascade stages) are MTCNN's own
    parameters; ``min_score`` then drops the final-stage detections below it. The default 0.9
    removes the low-confidence false positives MTCNN's 0.7 last-stage threshold lets through (a
    patch of blurred background in the test photo obama/obama.jpg scores 0.82) while the faces of
    the test photos score above 0.99.
    """

    def __init__(self, device: str | torch.device = "auto", min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), min_score: float = 0.9) -> None:
        self.device = resolve_device(device)
        self.min_score = min_score
        self._mtcnn = MTCNN(keep_all=True, select_largest=False, min_face_size=min_face_size,
                            thresholds=list(thresholds), device=self.device).eval()

    def detect(self, image: ImageLike, min_face_size: int | None = None) -> list[Face]:
        """All faces of one PIL image or HxWx3 uint8 RGB array, best score first ([] if none).

        ``min_face_size`` overrides the detector's for this call: when the face size is known
        (re-detection), a larger minimum skips the fine pyramid levels, which cost the most.
        """
        if min_face_size is None:
            return self.detect_batch([image])[0]
        default = self._mtcnn.min_face_size
        self._mtcnn.min_face_size = min_face_size
        try:
            return self.detect_batch([image])[0]
        finally:
            self._mtcnn.min_face_size = default

    def detect_batch(self, images: Sequence[ImageLike], batch_size: int = 8) -> list[list[Face]]:
        """Faces of each image, in input order; images of equal size share MTCNN calls.

        MTCNN runs its image pyramid on a stacked batch, so only same-size images can go together:
        they are grouped by size and sent ``batch_size`` at a time (bounding memory for large
        photos on a GPU).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        arrays = [as_rgb_array(image) for image in images]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, array in enumerate(arrays):
            groups[array.shape].append(index)
        results: list[list[Face]] = [[] for _ in arrays]
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                stacked = np.stack([arrays[i] for i in chunk])
                for index, faces in zip(chunk, self._detect_stacked(stacked)):
                    results[index] = faces
        return results

    def _detect_stacked(self, stacked: np.ndarray) -> list[list[Face]]:
        """Run MTCNN on an NxHxWx3 uint8 batch and unpack its object arrays into Face lists."""
        boxes, scores, points = self._mtcnn.detect(stacked, landmarks=True)
        batch = []
        for image_boxes, image_scores, image_points in zip(boxes, scores, points):
            if image_boxes is None:
                batch.append([])
                continue
            image_boxes = np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4)
            image_scores = np.asarray(image_scores, dtype=np.float64).reshape(-1)
            image_points = np.asarray(image_points, dtype=np.float32).reshape(-1, 5, 2)
            faces = [Face(box, float(score), landmarks)
                     for box, score, landmarks in zip(image_boxes, image_scores, image_points)
                     if score >= self.min_score]
            batch.append(sorted(faces, key=lambda face: face.score, reverse=True))
        return batch
