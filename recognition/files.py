"""File helpers shared by the commands: accepted image formats, photo discovery and decoding,
hashing, atomic writes and one-line error texts.

Formats: every suffix maps to the one Pillow format allowed to decode it, and Pillow may only use
the decoders of the accepted formats, whatever a file claims to be: a file named ``.jpg`` whose
bytes are e.g. EPS (which Pillow renders by running Ghostscript) is refused, so reading an image
never executes code. ``PHOTO_FORMATS`` are the user photos that are aligned and protected;
``DATASET_FORMATS`` the images of training and evaluation data sets, a superset (see there).

Atomic writes: write a temporary file beside the target, then rename it over the target, so an
interrupted run never leaves a half-written file (the rename is atomic on one filesystem). Files
get ordinary permissions (0644) rather than the owner-only mode of a temporary file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

# Photo suffix (lower case) -> Pillow format. JPEG also opens multi-picture (MPO) files.
PHOTO_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
PHOTO_EXTENSIONS = frozenset(PHOTO_FORMATS)
PHOTO_DECODERS = tuple(dict.fromkeys(PHOTO_FORMATS.values()))
# Data sets accept more: their images are only decoded to RGB tensors, never written back, and
# public sets come in older formats too (the original ORL and Extended Yale B files are netpbm
# .pgm). Photos keep to the everyday formats, the ones a processed photo is written back in.
DATASET_FORMATS = PHOTO_FORMATS | {".gif": "GIF", ".pgm": "PPM", ".ppm": "PPM"}
DATASET_EXTENSIONS = frozenset(DATASET_FORMATS)
DATASET_DECODERS = tuple(dict.fromkeys(DATASET_FORMATS.values()))


def find_photos(src: Path) -> tuple[list[Path], list[Path]]:
    """Photos under ``src`` (relative paths, sorted) and symlinks among them that leave ``src``.

    Extensions are matched case-insensitively; symlinked folders are not entered.
    """
    root = src.resolve()
    photos, outside = [], []
    for folder, _, names in os.walk(src, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() not in PHOTO_EXTENSIONS:
                continue
            rel = path.relative_to(src)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                outside.append(rel)
            else:
                photos.append(rel)
    return sorted(photos, key=Path.as_posix), sorted(outside, key=Path.as_posix)


def load_rgb(path: Path) -> np.ndarray:
    """Decode a photo as HxWx3 uint8 RGB, upright per its EXIF orientation (photo formats only)."""
    with Image.open(path, formats=PHOTO_DECODERS) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (streamed; data checksums, checkpoint and profile digests)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a binary handle of a temporary file next to ``path``, then rename it over
    ``path`` (parent folders are created; on any error the temporary file is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return write_atomic(path, lambda handle: handle.write(data))


def save_png_atomic(pixels: np.ndarray, path: str | Path) -> Path:
    """Atomically write a uint8 HxW or HxWxC array as PNG."""
    return write_atomic(path, lambda handle: Image.fromarray(np.ascontiguousarray(pixels)).save(handle, format="PNG"))


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Atomically write ``data`` as indented JSON with a final newline (creating the folder)."""
    return write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


def one_line(exc: BaseException) -> str:
    """An exception as a single line: its type and message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
