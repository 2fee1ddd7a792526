"""Reading and writing user photos without losing what users care about.

:func:`read_photo` decodes with the accepted Pillow decoders only (a file whose bytes are e.g.
EPS cannot start Ghostscript), treats Pillow's decompression-bomb *warning* as an error too, turns
the photo upright per its EXIF orientation, and keeps 8-bit L, LA, RGB and RGBA as they are (a
grayscale photo stays grayscale, alpha is kept; palette images become RGB or RGBA, 1-bit ones L).
16-bit, float and CMYK images are refused with a one-line reason: their values cannot be kept
within ε through an 8-bit pipeline, and a silent conversion would change every pixel.

:func:`write_photo` writes atomically in the photo's own format with its EXIF (orientation
removed, the pixels being upright) and ICC profile. Lossless formats (PNG, BMP, lossless WebP,
TIFF with a lossless compression) store the protected pixels exactly, so |Δ| ≤ ε holds after
saving. JPEG is re-encoded with the original's quantisation tables and chroma subsampling: the
file keeps its size and look, but decoding it no longer returns the exact protected pixels, so
the bound is *not* guaranteed for JPEG output; the measured L∞ is reported (``--format png``
keeps it exact).
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

from recognition.files import PHOTO_DECODERS, write_bytes_atomic

KEPT_MODES = ("L", "LA", "RGB", "RGBA")
LOSSLESS_TIFF = ("raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits")


@dataclass(eq=False)
class Photo:
    """Upright 8-bit pixels (HxW for L, HxWxC otherwise), their mode, the file format and what to
    carry over on saving (``exif`` bytes, ``icc_profile``, JPEG ``qtables``/``subsampling``, TIFF
    ``compression``)."""

    pixels: np.ndarray
    mode: str
    format: str
    keep: dict = field(default_factory=dict)


def _normalise_mode(image: Image.Image) -> Image.Image:
    """The image in one of :data:`KEPT_MODES`, or ValueError for what cannot stay within ε."""
    mode = image.mode
    if mode in KEPT_MODES:
        return image
    if mode.startswith("I") or mode == "F":
        raise ValueError(f"{mode} images (16-bit or float samples) are not supported; "
                         "save the photo as 8 bits per channel")
    if mode == "CMYK":
        raise ValueError("CMYK images are not supported; convert the photo to RGB first")
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if transparent else "RGB")
    if mode in ("La", "RGBa", "RGBX", "YCbCr"):
        return image.convert("RGBA" if mode in ("La", "RGBa") else "RGB")
    raise ValueError(f"unsupported image mode {mode}")


def read_photo(path: str | Path) -> Photo:
    """Decode one photo (accepted formats only, decompression bombs refused), upright, 8-bit."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path, formats=PHOTO_DECODERS) as image:
            image.load()
            fmt = "JPEG" if image.format == "MPO" else image.format
            if getattr(image, "n_frames", 1) > 1 and fmt != "JPEG":
                raise ValueError(f"multi-frame {fmt} files (animations, pages) are not supported")
            keep = {key: image.info[key] for key in ("icc_profile", "dpi") if image.info.get(key)}
            if fmt == "JPEG":
                keep["qtables"] = image.quantization
                keep["subsampling"] = JpegImagePlugin.get_sampling(image)
            if fmt == "TIFF":
                keep["compression"] = image.info.get("compression", "raw")
            upright = ImageOps.exif_transpose(image)
            exif = upright.getexif()
            if len(exif):
                keep["exif"] = exif.tobytes()
            upright = _normalise_mode(upright)
            return Photo(np.asarray(upright).copy(), upright.mode, fmt, keep)


def _save_options(photo: Photo, fmt: str) -> dict:
    """Pillow save options that keep the photo's metadata and, but for JPEG, its exact pixels."""
    keep = photo.keep
    options = {key: keep[key] for key in ("icc_profile", "exif", "dpi") if key in keep}
    if fmt == "JPEG":
        if keep.get("qtables") and photo.format == "JPEG":
            subsampling = keep.get("subsampling", -1)
            options |= {"qtables": keep["qtables"], "subsampling": subsampling if subsampling >= 0 else 0}
        else:
            options["quality"] = 95
    elif fmt == "WEBP":
        options |= {"lossless": True, "exact": True}
    elif fmt == "TIFF":
        options.pop("exif", None)
        compression = keep.get("compression", "raw")
        options["compression"] = compression if compression in LOSSLESS_TIFF else "tiff_lzw"
    elif fmt == "BMP":
        options = {}
    return options


def encode_photo(photo: Photo, pixels: np.ndarray, fmt: str) -> bytes:
    """The file bytes of ``pixels`` (same shape and mode as ``photo.pixels``) in format ``fmt``."""
    if fmt == "JPEG" and photo.mode not in ("L", "RGB"):
        raise ValueError(f"JPEG cannot store {photo.mode} pixels; use --format png")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode=photo.mode).save(buffer, format=fmt,
                                                                        **_save_options(photo, fmt))
    return buffer.getvalue()


def write_photo(photo: Photo, pixels: np.ndarray, path: Path, fmt: str) -> None:
    """Atomically write ``pixels`` to ``path`` in format ``fmt``."""
    write_bytes_atomic(path, encode_photo(photo, pixels, fmt))


def is_lossless(fmt: str) -> bool:
    """Whether :func:`write_photo` stores pixels exactly in this format (all but JPEG)."""
    return fmt != "JPEG"


SSIM_WINDOW = 7  # skimage's default window (uniform, sample covariance)
SSIM_C1, SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # skimage's K1, K2 at data range 255


def _ssim_channel(original: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """skimage's SSIM map of one uint8 channel (7x7 uniform window, sample covariance), with
    OpenCV's box filter in float32. The pixels are centred on 128 before the second moments are
    taken, so E[x²] − E[x]² cancels four times less: the map is closer to skimage's float64 one than
    skimage's own float32 path (6e-5 per pixel against 3e-4 on a JPEG re-save of a 3.3-megapixel
    photo) in a third of its time."""
    import cv2

    def mean(image: np.ndarray) -> np.ndarray:
        return cv2.blur(image, (SSIM_WINDOW, SSIM_WINDOW), borderType=cv2.BORDER_REFLECT)

    x, y = (channel.astype(np.float32) - 128 for channel in (original, protected))
    mx, my = mean(x), mean(y)
    sample = SSIM_WINDOW ** 2 / (SSIM_WINDOW ** 2 - 1)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    mx += 128
    my += 128
    return ((2 * mx * my + SSIM_C1) * (2 * sample * cxy + SSIM_C2)
            / ((mx * mx + my * my + SSIM_C1) * (sample * (vx + vy) + SSIM_C2)))


def _ssim_map(original: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """skimage's SSIM map [H, W, C] of uint8 HxW or HxWxC pixels (channels independent, as
    skimage's ``channel_axis`` treats them), in float32; only values a window's half-width
    inside the border are skimage's (the border rows are cropped from its mean anyway)."""
    if original.ndim == 2:
        return _ssim_channel(original, protected)[..., None]
    return np.stack([_ssim_channel(original[..., c], protected[..., c]) for c in range(original.shape[2])], axis=-1)


def photo_metrics(original: np.ndarray, protected: np.ndarray) -> dict:
    """L∞ (0–255 units), PSNR (dB, None if identical) and SSIM of two equally shaped uint8 arrays.

    All are the whole-photo values (skimage's definitions), computed only where the photos differ:
    the error is zero elsewhere, and every SSIM window that holds no changed pixel compares two
    equal windows, whose SSIM is exactly 1. So the error is taken over the bounding box of the
    changed pixels, SSIM over that box plus a window's margin, and the untouched windows are
    counted as 1 — for a face on a large photo that is a small fraction of the pixels.
    """
    from skimage.metrics import structural_similarity

    if original.shape != protected.shape:
        raise ValueError(f"sizes differ: {original.shape} vs {protected.shape}")
    changed = original != protected
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if rows.size == 0:
        return {"linf": 0, "psnr": None, "ssim": 1.0}
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    diff = original[box].astype(np.int32) - protected[box].astype(np.int32)
    linf = int(np.abs(diff).max())
    mse = float(np.square(diff, dtype=np.float64).sum()) / original.size
    psnr = 10 * math.log10(255 ** 2 / mse)
    height, width = original.shape[:2]
    if min(height, width) <= 3 * SSIM_WINDOW:       # tiny photo: nothing to save
        ssim = structural_similarity(original, protected, data_range=255,
                                     channel_axis=None if original.ndim == 2 else 2)
        return {"linf": linf, "psnr": round(psnr, 3), "ssim": round(float(ssim), 6)}
    pad = (SSIM_WINDOW - 1) // 2
    # centres whose window touches a change, within the centres skimage averages over
    y0, y1 = max(rows[0] - pad, pad), min(rows[-1] + 1 + pad, height - pad)
    x0, x1 = max(cols[0] - pad, pad), min(cols[-1] + 1 + pad, width - pad)
    # the sub-image holds those windows whole
    sy0, sy1, sx0, sx1 = y0 - pad, y1 + pad, x0 - pad, x1 + pad
    ssim_map = _ssim_map(original[sy0:sy1, sx0:sx1], protected[sy0:sy1, sx0:sx1])
    touched = ssim_map[pad:pad + (y1 - y0), pad:pad + (x1 - x0)].reshape((y1 - y0) * (x1 - x0), -1)
    centres = (height - 2 * pad) * (width - 2 * pad)
    ssim = float(np.mean((touched.sum(axis=0, dtype=np.float64) + (centres - touched.shape[0])) / centres))
    return {"linf": linf, "psnr": round(psnr, 3), "ssim": round(ssim, 6)}


def colour_and_alpha(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split HxW / HxWx2 (LA) / HxWx3 / HxWx4 (RGBA) uint8 pixels into colour and alpha."""
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        return pixels[..., :-1].squeeze(-1) if pixels.shape[2] == 2 else pixels[..., :3], pixels[..., -1]
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3):
        return pixels, None
    raise ValueError(f"unsupported pixel array of shape {pixels.shape}")
