"""dlib's aligned face chip (``dlib.get_face_chip``) without dlib: the input of dlib's face ResNet.

dlib aligns a face by the similarity transform (Umeyama least squares) that maps a 5-point template
onto the face's landmarks, then samples a ``size`` x ``size`` chip with bilinear interpolation.
This module follows dlib's ``get_face_chip_details`` and ``extract_image_chips``
(``dlib/image_transforms/interpolation.h``) step by step:

- the template is dlib's, normalised to [0, 1] and shrunk by ``padding`` (0.25 for the face
  ResNet): ``(padding + t) / (2 * padding + 1) * size``;
- the chip's pixel (0, 0) maps to the corner of the rotated extraction rectangle and pixel
  ``size - 1`` to the opposite corner (dlib's rectangles include their last pixel);
- when the chip is much smaller than the face, dlib first halves the image with its
  ``pyramid_down<2>`` filter (5-tap [1 4 6 4 1] kernel, integer arithmetic, its own geometry)
  until one more halving would make the face smaller than the chip; this is reproduced exactly;
- the final sampling is dlib's bilinear interpolation in float64, truncated to uint8, with black
  where a pixel's 2 x 2 neighbourhood leaves the image. It is done in numpy rather than with
  ``cv2.warpAffine``: OpenCV 4 rounds sampling positions to 1/32 pixel, which moved 5-15 % of the
  chip values by up to 3 grey levels (OpenCV 4.10); this way the chips equal dlib's byte for byte
  (all 157 faces of the test photos, ``tests/test_dlib_resnet.py``) whatever the OpenCV version.

Landmarks: dlib's 5-point predictor (``shape_predictor_5_face_landmarks.dat``) gives, in this
order, the outer and inner corner of the eye on the image's right, the outer and inner corner of
the eye on the image's left, and the bottom of the nose (:data:`DLIB_5_TEMPLATE`). MTCNN's five
points (eye centres, nose tip, mouth corners; :mod:`recognition.detection`) are different points:
:func:`mtcnn_face_chip` aligns them to :data:`MTCNN_TEMPLATE`, the corresponding points of dlib's
68-point mean face (the 5-point template's points lie within 0.003 of that mean face's points 45,
42, 36, 39 and 33). That is an estimate: the two landmark sets disagree face by face, so the MTCNN
chip's descriptor differs from the one of dlib's chip (how much: docs/recognition.md, "dlib-resnet").
"""
from __future__ import annotations

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's 5-point template (get_face_chip_details), in the predictor's landmark order.
DLIB_5_TEMPLATE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                            [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                            [0.4901123135679, 0.6277975316475]])
# MTCNN's points on dlib's 68-point mean face (get_face_chip_details): the eye centres are the
# means of points 36-41 and 42-47, the nose tip is point 30, the mouth corners points 48 and 54.
MTCNN_TEMPLATE = np.array([[0.2254918, 0.2159903], [0.7547613, 0.2159903], [0.490127, 0.515625],
                           [0.254149, 0.780233], [0.726104, 0.780233]])
DLIB_5_TEMPLATE.setflags(write=False)
MTCNN_TEMPLATE.setflags(write=False)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama 1991,
    as dlib's ``find_similarity_transform``)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    sigma_src = ((src - mean_src) ** 2).sum(1).mean()
    cov = (dst - mean_dst).T @ (src - mean_src) / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1 if d[1] < d[0] else 0] = -1
    rotation = u @ np.diag(s) @ vt
    scale = (d * s).sum() / sigma_src if sigma_src else 1.0
    return np.hstack([scale * rotation, (mean_dst - scale * rotation @ mean_src)[:, None]])


def chip_rectangle(landmarks: np.ndarray, template: np.ndarray = DLIB_5_TEMPLATE,
                   size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> tuple[np.ndarray, float]:
    """dlib's ``chip_details`` for a face: rectangle (left, top, right, bottom) in image pixels, and
    its rotation angle in radians."""
    chip_points = (padding + np.asarray(template)) / (2 * padding + 1) * size
    tform = similarity_transform(chip_points, landmarks)
    x_axis = tform[:, 0]
    scale = float(np.hypot(*x_axis))
    centre = tform[:, :2] @ np.array([size / 2, size / 2]) + tform[:, 2]
    half = (size * scale - 1) / 2
    return np.concatenate([centre - half, centre + half]), float(np.arctan2(x_axis[1], x_axis[0]))


def _rect_down(rect: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>::rect_down``: p / 2 - (1.25, 0.75) for both corners."""
    return rect / 2 - np.array([1.25, 0.75, 1.25, 0.75])


def _area(rect: np.ndarray) -> float:
    return float((rect[2] - rect[0] + 1) * (rect[3] - rect[1] + 1))


def pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` on an HxWxC uint8 image: [1 4 6 4 1] filter over the valid region
    horizontally then vertically, every other row/column kept, integer sum floored by 256."""
    h, w = image.shape[:2]
    if h <= 8 or w <= 8:
        raise ValueError(f"image of {w}x{h} is too small for dlib's pyramid_down")
    taps = (1, 4, 6, 4, 1)
    src = image.astype(np.int32)
    cols = (w - 3) // 2
    rows = sum(taps[j] * src[:, j:j + 2 * cols - 1:2] for j in range(5))
    out_rows = (h - 3) // 2
    down = sum(taps[j] * rows[j:j + 2 * out_rows - 1:2] for j in range(5))
    return (down // 256).astype(np.uint8)


def _rotated_corners(rect: np.ndarray, angle: float) -> np.ndarray:
    """Corners tl, tr, bl, br of ``rect`` rotated by ``angle`` about its centre (dlib's rotate_point)."""
    corners = rect[[0, 1, 2, 1, 0, 3, 2, 3]].reshape(4, 2)
    centre = (rect[:2] + rect[2:]) / 2
    c, s = np.cos(angle), np.sin(angle)
    return (corners - centre) @ np.array([[c, s], [-s, c]]) + centre


def _source_region(image: np.ndarray, rect: np.ndarray, angle: float,
                   size: int) -> tuple[np.ndarray, np.ndarray]:
    """The crop dlib samples from (halved by its pyramid as often as dlib would), and ``rect`` in
    that crop's coordinates."""
    depth, grow = 0, 2.0
    down = _rect_down(rect)
    while _area(down) > size * size:
        down, depth, grow = _rect_down(down), depth + 1, grow * 2 + 2
    corners = _rotated_corners(rect, angle)
    h, w = image.shape[:2]
    box = np.concatenate([np.maximum(corners.min(0) - grow, 0),
                          np.minimum(corners.max(0) + grow, (w - 1, h - 1))])
    left, top, right, bottom = (int(np.floor(v + 0.5)) for v in box)  # std::lround (v >= 0)
    source = image[top:bottom + 1, left:right + 1]
    rect = rect - np.array([left, top, left, top])
    for _ in range(depth):
        source, rect = pyramid_down(source), _rect_down(rect)
    return source, rect


def bilinear_sample(source: np.ndarray, to_source: np.ndarray, size: int) -> np.ndarray:
    """dlib's ``transform_image`` with ``interpolate_bilinear``: chip pixel (x, y) takes the bilinear
    value at ``to_source @ (x, y, 1)``, truncated to uint8, or 0 where its 2 x 2 neighbourhood
    leaves ``source``. Computed in float64 like dlib, so the chip does not depend on a library's
    fixed-point sampling (OpenCV 4's ``warpAffine`` rounds positions to 1/32 pixel)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = to_source[0, 0] * xs + to_source[0, 1] * ys + to_source[0, 2]
    py = to_source[1, 0] * xs + to_source[1, 1] * ys + to_source[1, 2]
    left, top = np.floor(px), np.floor(py)
    h, w = source.shape[:2]
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    col, row = np.where(inside, left, 0).astype(np.intp), np.where(inside, top, 0).astype(np.intp)
    fx, fy = (px - left)[..., None], (py - top)[..., None]

    def pixel(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return source[r, c].reshape(size, size, -1).astype(np.float64)

    value = ((1 - fy) * ((1 - fx) * pixel(row, col) + fx * pixel(row, col + 1))
             + fy * ((1 - fx) * pixel(row + 1, col) + fx * pixel(row + 1, col + 1)))
    chip = np.where(inside[..., None], np.floor(value), 0).astype(np.uint8)
    return chip.reshape((size, size) + source.shape[2:])


def _chip_to_rect(rect: np.ndarray, angle: float, size: int) -> np.ndarray:
    """2x3 map from chip pixels to the pixels of the image ``rect`` lives in: chip pixels (0, 0),
    (size-1, 0) and (0, size-1) go to the rotated rectangle's corners."""
    corners = _rotated_corners(rect, angle)[:3]
    chip_corners = np.array([[0, 0], [size - 1, 0], [0, size - 1]], dtype=np.float64)
    return np.linalg.solve(np.hstack([chip_corners, np.ones((3, 1))]), corners).T


def extract_chip(image: np.ndarray, rect: np.ndarray, angle: float, size: int = CHIP_SIZE) -> np.ndarray:
    """dlib's ``extract_image_chip`` of a ``size`` x ``size`` chip: the rotated ``rect`` resampled,
    via dlib's image pyramid and bilinear interpolation."""
    source, rect = _source_region(np.ascontiguousarray(image), rect, angle, size)
    return bilinear_sample(source, _chip_to_rect(rect, angle, size), size)


def chip_to_image(landmarks: np.ndarray, template: np.ndarray = DLIB_5_TEMPLATE, size: int = CHIP_SIZE,
                  padding: float = CHIP_PADDING) -> np.ndarray:
    """2x3 map from chip pixels to full-resolution image pixels: the chip's geometry without dlib's
    pyramid, e.g. for a differentiable warp of a face to its chip (``template``: the landmarks'
    template, :data:`DLIB_5_TEMPLATE` or :data:`MTCNN_TEMPLATE`)."""
    rect, angle = chip_rectangle(landmarks, template, size, padding)
    return _chip_to_rect(rect, angle, size)


def face_chip(image: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE,
              padding: float = CHIP_PADDING) -> np.ndarray:
    """``dlib.get_face_chip(image, shape, size, padding)`` for dlib's 5-point landmarks.

    ``image`` is HxWx3 uint8 RGB, ``landmarks`` a (5, 2) array of (x, y) in
    ``shape_predictor_5_face_landmarks`` order (see :data:`DLIB_5_TEMPLATE`).
    """
    rect, angle = chip_rectangle(landmarks, DLIB_5_TEMPLATE, size, padding)
    return extract_chip(image, rect, angle, size)


def mtcnn_face_chip(image: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE,
                    padding: float = CHIP_PADDING) -> np.ndarray:
    """An estimate of dlib's chip from MTCNN's five points (eye centres, nose tip, mouth corners,
    in :class:`recognition.detection.Face` order), aligned to :data:`MTCNN_TEMPLATE`.

    E.g. ``mtcnn_face_chip(image, FaceDetector().detect(image)[0].landmarks)``; see the module
    docstring for how far its descriptors are from those of dlib's own landmarks.
    """
    rect, angle = chip_rectangle(landmarks, MTCNN_TEMPLATE, size, padding)
    return extract_chip(image, rect, angle, size)
