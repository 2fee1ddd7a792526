"""Helpers shared by the protect/profile tests (no tests here): a tiny real profile, photo folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_data

# Small real photos of the bundle: one face each, and a group photo with two faces.
PHOTOS = ("kit_harington/john2.jpg", "obama/obama2.jpg", "group/kit_with_rose.jpg")


def build_tiny_profile(out: Path) -> Path:
    """A real but tiny profile: IR-18 at width 1/16 on the ORL faces (as aligned crops, 32 px),
    one epoch. Seconds to build; good enough to exercise every code path, not to protect."""
    from faceguard.profile.fit import FitSettings, fit_profile

    settings = FitSettings(size=32, width=0.0625, embedding=64, epochs=1, batch_size=64, aligned=True)
    path = out / "tiny.safetensors"
    fit_profile([require_data("orl_faces.npz")], path, settings, device="cpu", command="test", progress=False)
    return path


def copy_photos(dst: Path, names=PHOTOS) -> Path:
    """Copy some bundle photos into ``dst`` keeping their identity folders; returns ``dst``."""
    root = require_data("photos")
    for name in names:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, dst / name)
    return dst


def huge_png(path: Path, side: int = 40000) -> Path:
    """A PNG whose header announces side x side pixels (a decompression bomb), a few bytes long."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def gradient_image(size: int = 160) -> Image.Image:
    """A smooth colour gradient: a photo without any face."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.full((size, size), 90.0)], 2)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run a module on one intra-op thread (restored afterwards): the test machine's cores are
    shared, and oversubscribed threads made these tests ten times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
