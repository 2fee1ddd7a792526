"""How visible a protection is to a person: FLIP and CIEDE2000 beside a JPEG re-save's.

Face SSIM and PSNR say little about what people notice: SSIM on luminance misses saturated,
low-frequency colour changes entirely, and PSNR weighs a blotch on a cheek like noise in hair. So
every quality number faceguard reports comes with two perceptual ones, each taken on a region
(a face box, or the whole photo):

* **FLIP** (NVIDIA's ꟻLIP, PyPI ``flip-evaluator``; LDR mode, its default 67 pixels per degree):
  the mean perceptual difference of two images flipped one after the other, 0 (identical) to 1.
  It models colour and luminance contrast sensitivity, so blotches of colour count.
* **CIEDE2000**: the mean ΔE₀₀ colour difference per pixel (scikit-image; about 1 = a
  just-noticeable difference side by side, 2.3 often quoted as the JND for patches).

Both are measured on the protected region and on the same region of **JPEG re-saves of the
original** at quality 90 and 75 (Pillow, its default 4:2:0 chroma subsampling): a change people
accept every day. ``ratio_jpeg75`` = FLIP(protected) / FLIP(JPEG-75) says "as visible as a JPEG-75
re-save" when it is 1; below 1 the protection is less visible than that. The references are cut
from a re-save of the whole photo, so JPEG's 8x8 blocks fall where a real re-save puts them.

Cost: FLIP at 67 pixels per degree takes about 2-6 s per megapixel on one core here, so a record
costs about three FLIPs of the face box; the whole-photo numbers only cost the changed region
(:func:`whole_photo`).
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

JPEG_QUALITIES = (90, 75)  # the reference re-saves every visibility record holds
Box = Sequence[float]  # x0, y0, x1, y1 in photo pixels (exclusive ends; rounded outward)


def as_float_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 HxW (gray) or HxWx3 pixels as float32 HxWx3 in [0, 1], what FLIP reads."""
    rgb = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels[..., :3]
    return np.ascontiguousarray(rgb, dtype=np.float32) / 255


def flip_map(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
    """LDR-FLIP of two equally shaped uint8 images: the per-pixel error map [H, W] in [0, 1] and its
    mean (0 for identical images)."""
    import flip_evaluator

    if reference.shape != test.shape:
        raise ValueError(f"sizes differ: {reference.shape} vs {test.shape}")
    error, mean, _ = flip_evaluator.evaluate(as_float_rgb(reference), as_float_rgb(test), "LDR",
                                             applyMagma=False)
    error = np.asarray(error, dtype=np.float32)
    return (error[..., 0] if error.ndim == 3 else error), float(mean)


def flip_error(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean LDR-FLIP of two equally shaped uint8 images (0 = identical)."""
    return flip_map(reference, test)[1]


def ciede2000(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference per pixel of two equally shaped uint8 images (sRGB, D65)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    if reference.shape != test.shape:
        raise ValueError(f"sizes differ: {reference.shape} vs {test.shape}")
    return float(deltaE_ciede2000(rgb2lab(as_float_rgb(reference)), rgb2lab(as_float_rgb(test))).mean())


def jpeg_resave(pixels: np.ndarray, quality: int) -> np.ndarray:
    """uint8 pixels (HxW or HxWx3) saved as JPEG at ``quality`` by Pillow and decoded again."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def region_slices(box: Box, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Row and column slices of ``box`` (rounded outward, clipped to the photo of ``shape``)."""
    height, width = shape[:2]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {list(box)} lies outside the {width}x{height} photo")
    return slice(y0, y1), slice(x0, x1)


def _rounded(value: float) -> float:
    return round(value, 4)


class Visibility:
    """Visibility records of one photo's regions against the original's JPEG re-saves.

    ``Visibility(original, protected).region(box)`` gives a dict with ``flip`` and ``ciede2000`` of
    the protected region, ``flip_jpeg90`` / ``flip_jpeg75`` and ``ciede2000_jpeg90`` /
    ``ciede2000_jpeg75`` of the re-saves, and ``ratio_jpeg90`` / ``ratio_jpeg75`` (FLIP over the
    re-save's; None when the re-save is identical). The re-saves are made once per photo.
    """

    def __init__(self, original: np.ndarray, protected: np.ndarray) -> None:
        if original.shape != protected.shape:
            raise ValueError(f"sizes differ: {original.shape} vs {protected.shape}")
        self.original, self.protected = original, protected
        self.references = {quality: jpeg_resave(original, quality) for quality in JPEG_QUALITIES}

    def region(self, box: Box | None = None) -> dict:
        """The record of one region (the whole photo when ``box`` is None)."""
        rows, cols = (slice(None), slice(None)) if box is None else region_slices(box, self.original.shape)
        before, after = self.original[rows, cols], self.protected[rows, cols]
        record = {"flip": _rounded(flip_error(before, after)), "ciede2000": _rounded(ciede2000(before, after))}
        for quality, resaved in self.references.items():
            reference = resaved[rows, cols]
            flip = flip_error(before, reference)
            record[f"flip_jpeg{quality}"] = _rounded(flip)
            record[f"ciede2000_jpeg{quality}"] = _rounded(ciede2000(before, reference))
            record[f"ratio_jpeg{quality}"] = _rounded(record["flip"] / flip) if flip > 0 else None
        return record

    def error_map(self, box: Box | None = None) -> np.ndarray:
        """The FLIP error map [h, w] in [0, 1] of one region (for the report's heat map)."""
        rows, cols = (slice(None), slice(None)) if box is None else region_slices(box, self.original.shape)
        return flip_map(self.original[rows, cols], self.protected[rows, cols])[0]


# FLIP's filters reach fewer pixels than this at 67 pixels per degree (the colour CSF's radius, then
# the feature detectors'), so pixels farther from every change have FLIP error exactly 0
FLIP_REACH = 32


def changed_box(original: np.ndarray, protected: np.ndarray, margin: int = 0) -> tuple[slice, slice] | None:
    """Row and column slices of the bounding box of the changed pixels grown by ``margin`` (None
    when nothing changed)."""
    changed = original != protected
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if rows.size == 0:
        return None
    height, width = changed.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, height)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, width)))


def whole_photo(original: np.ndarray, protected: np.ndarray) -> dict:
    """FLIP and CIEDE2000 of the whole photo: computed on the changed pixels' box (grown by
    :data:`FLIP_REACH`, beyond which both are exactly 0) and averaged over every pixel, so a face
    on a large photo costs what the face costs. No JPEG reference: a re-save changes every pixel,
    protection only the faces, so their ratio would say little."""
    box = changed_box(original, protected, FLIP_REACH)
    if box is None:
        return {"flip": 0.0, "ciede2000": 0.0}
    share = (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / (original.shape[0] * original.shape[1])
    before, after = original[box], protected[box]
    return {"flip": _rounded(flip_error(before, after) * share), "ciede2000": _rounded(ciede2000(before, after) * share)}


def photo_visibility(original: np.ndarray, protected: np.ndarray, boxes: Sequence[Box]) -> dict:
    """``{"faces": [record per box], "photo": whole-photo record}`` (:meth:`Visibility.region`,
    :func:`whole_photo`) for uint8 colour pixels (HxW or HxWx3; alpha removed by the caller)."""
    visibility = Visibility(original, protected)
    return {"faces": [visibility.region(box) for box in boxes], "photo": whole_photo(original, protected)}


def as_visible_as(ratio: float | None, quality: int = 75) -> str:
    """Plain words for a FLIP ratio: e.g. ``"0.8x a JPEG-75 re-save"``."""
    return "n/a" if ratio is None else f"{ratio:.2g}x a JPEG-{quality} re-save"
