"""Five-point similarity alignment to the ArcFace/insightface 112x112 template, and its inverse.

A face is aligned by the similarity transform (rotation, uniform scale, translation) that best maps
its five landmarks (left eye, right eye, nose, left and right mouth corners) onto
:data:`ARCFACE_TEMPLATE`, estimated with OpenCV's ``estimateAffinePartial2D`` (least-median-of-
squares, as insightface does, so one badly placed landmark cannot drag the fit). The crop keeps
the forward matrix and its inverse so that an edited crop (e.g. a protected face) can be warped
back into the full-resolution photo with :func:`paste_back`, which changes pixels only inside
:func:`paste_mask`: everything outside the face region stays byte-identical.

Landmarks can come from a detector (:mod:`recognition.detection`) or from a data set's own list
(:func:`read_landmark_list` for CelebA's ``list_landmarks_align_celeba.txt`` format).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ARCFACE_SIZE = 112
# insightface's arcface_dst: left eye, right eye, nose tip, left and right mouth corners in a
# 112x112 crop.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_TEMPLATE.setflags(write=False)
CELEBA_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                  "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned crop with its geometry.

    ``crop`` is uint8 HxW or HxWxC (size x size); ``matrix`` (2x3 float64) maps original-photo
    pixel coordinates to crop coordinates and ``inverse`` (2x3 float64) maps crop coordinates
    back to the photo. ``eq=False``: arrays have no single truth value.
    """

    crop: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray

    @property
    def size(self) -> int:
        """Side of the square crop in pixels."""
        return int(self.crop.shape[0])


def _landmark_array(landmarks: np.ndarray) -> np.ndarray:
    """Validate five (x, y) landmarks and return them as float64 [5, 2]."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"expected five finite (x, y) landmarks [5, 2], got shape {points.shape}")
    return points


def template(size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ArcFace template for a size x size crop (the 112 template scaled uniformly)."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)


def estimate_similarity(landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """2x3 float64 similarity matrix mapping the five landmarks onto the template of ``size``.

    ``cv2.estimateAffinePartial2D`` restricts the fit to rotation + uniform scale + translation
    (faces must not be sheared) and with ``LMEDS`` needs no pixel threshold.
    """
    matrix, _ = cv2.estimateAffinePartial2D(_landmark_array(landmarks), template(size),
                                            method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("no similarity transform fits these landmarks (degenerate points?)")
    return matrix.astype(np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (x, y) points [N, 2]; returns float64 [N, 2]."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> AlignedFace:
    """Warp ``image`` (HxW or HxWxC array) so the face's landmarks land on the template.

    Bilinear interpolation; the border is *replicated*, not black as in insightface: a crop that
    reaches past the photo edge then holds no artificial black wedges (hard edges a model or a
    perturbation could latch on to), and crop pixels interpolated across the photo edge keep the
    edge colour, so :func:`paste_back` of an unedited crop does not darken photo-border pixels.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {image.shape}")
    matrix = estimate_similarity(landmarks, size)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return AlignedFace(crop=crop.reshape((size, size) + image.shape[2:]), matrix=matrix,
                       inverse=cv2.invertAffineTransform(matrix).astype(np.float64))


def _footprint_box(shape: tuple[int, ...], aligned: AlignedFace) -> tuple[int, int, int, int]:
    """Bounding box x0, y0, x1, y1 (exclusive ends) of the crop's footprint, clipped to the photo."""
    edge = aligned.size - 1
    corners = transform_points(np.array([[0, 0], [edge, 0], [0, edge], [edge, edge]]), aligned.inverse)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    height, width = shape[:2]
    return max(x0, 0), max(y0, 0), min(max(x1, 0), width), min(max(y1, 0), height)


def paste_mask(shape: tuple[int, ...], aligned: AlignedFace, margin: float = 1.0) -> np.ndarray:
    """Bool HxW mask of the photo pixels that :func:`paste_back` overwrites.

    A photo pixel is inside when it maps into the crop at least ``margin`` crop pixels away from
    the crop's edge, so its bilinear sample of the crop uses crop pixels only (never the border
    extrapolation) and steers clear of the outermost rows, which are the least reliable after an
    edit. The test is done in crop coordinates, so the margin means the same at any face scale.
    """
    mask = np.zeros(shape[:2], dtype=bool)
    x0, y0, x1, y1 = _footprint_box(shape, aligned)
    if x0 >= x1 or y0 >= y1:
        return mask
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    low, high = margin, aligned.size - 1 - margin
    inside = np.ones((y1 - y0, x1 - x0), dtype=bool)
    for (a, b, c) in aligned.matrix:  # crop u, then crop v, of every pixel of the box
        coordinate = a * xs + b * ys + c
        inside &= (coordinate >= low) & (coordinate <= high)
    mask[y0:y1, x0:x1] = inside
    return mask


def paste_back(original: np.ndarray, crop: np.ndarray, aligned: AlignedFace,
               margin: float = 1.0) -> np.ndarray:
    """Warp an (edited) crop back into a copy of ``original``, only inside :func:`paste_mask`.

    ``crop`` has the size of ``aligned.crop`` and the dtype of ``original``. Grayscale (HxW),
    RGB and RGBA photos are supported; for RGBA only the colour channels are written (from an RGB
    or RGBA crop) and the alpha channel is left untouched. Every pixel outside the mask is
    byte-identical to ``original``; the original array itself is never modified.
    """
    original = np.asarray(original)
    crop = np.asarray(crop)
    if crop.shape[:2] != aligned.crop.shape[:2]:
        raise ValueError(f"crop is {crop.shape[:2]}, the aligned crop was {aligned.crop.shape[:2]}")
    if crop.dtype != original.dtype:
        raise ValueError(f"crop dtype {crop.dtype} differs from the photo's {original.dtype}")
    channels = original.shape[2] if original.ndim == 3 else None
    written = 3 if channels == 4 else channels  # RGBA: colour channels only, alpha untouched
    if (crop.shape[2] if crop.ndim == 3 else None) not in {written, channels}:
        raise ValueError(f"a crop of shape {crop.shape} cannot be pasted into a photo of shape "
                         f"{original.shape}")
    result = original.copy()
    mask = paste_mask(original.shape, aligned, margin)
    if not mask.any():
        return result
    x0, y0, x1, y1 = _footprint_box(original.shape, aligned)
    source = crop if written is None else crop[..., :written]
    # Sample the crop at matrix . (x, y) for the photo pixels of the footprint's box only: the
    # forward matrix with WARP_INVERSE_MAP is the exact map paste_mask tests, offset to the box.
    to_crop = aligned.matrix.copy()
    to_crop[:, 2] += aligned.matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    warped = cv2.warpAffine(np.ascontiguousarray(source), to_crop, (x1 - x0, y1 - y0),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    box_mask = mask[y0:y1, x0:x1]
    target = result[y0:y1, x0:x1]
    if written is None:
        target[box_mask] = warped[box_mask]
    else:
        target[..., :written][box_mask] = warped.reshape(box_mask.shape + (written,))[box_mask]
    return result


def read_landmark_list(path: str | Path) -> dict[str, np.ndarray]:
    """Read a CelebA-style landmark list: file name -> float64 [5, 2] landmarks.

    Format of ``list_landmarks_align_celeba.txt`` (and ``list_landmarks_celeba.txt``): a line
    with the number of entries, a line of the ten column names (:data:`CELEBA_COLUMNS`), then
    ``<file> lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y
    rightmouth_x rightmouth_y`` per line, whitespace-separated. Plain text is parsed; nothing in
    the file is executed. Raises ValueError naming the line on any malformed entry.
    """
    path = Path(path)
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [fields for fields in lines if fields]
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise ValueError(f"{path}: first line must hold the number of entries")
    if tuple(lines[1]) != CELEBA_COLUMNS:
        raise ValueError(f"{path}: second line must name the columns {' '.join(CELEBA_COLUMNS)}")
    entries: dict[str, np.ndarray] = {}
    for number, fields in enumerate(lines[2:], start=3):
        if len(fields) != 11:
            raise ValueError(f"{path}: line {number}: expected a file name and 10 numbers")
        try:
            points = np.array([float(value) for value in fields[1:]]).reshape(5, 2)
        except ValueError as exc:
            raise ValueError(f"{path}: line {number}: {exc}") from None
        if fields[0] in entries:
            raise ValueError(f"{path}: line {number}: {fields[0]} is listed twice")
        entries[fields[0]] = _landmark_array(points)
    if len(entries) != int(lines[0][0]):
        raise ValueError(f"{path}: header announces {lines[0][0]} entries, found {len(entries)}")
    return entries
