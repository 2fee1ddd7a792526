"""Image writing helpers: atomic writes, so an interrupted run never leaves a half-written file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def save_png_atomic(pixels: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 HxW or HxWxC array as PNG via a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(np.ascontiguousarray(pixels)).save(handle, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
