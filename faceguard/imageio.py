"""Image writing helpers: atomic writes, so an interrupted run never leaves a half-written file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from recognition.atomic import write_atomic


def save_png_atomic(pixels: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 HxW or HxWxC array as PNG via a temporary file in the same folder + rename."""
    return write_atomic(path, lambda handle: Image.fromarray(np.ascontiguousarray(pixels)).save(handle, format="PNG"))
