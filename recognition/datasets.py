"""In-memory image datasets: CIFAR-10 (from the JPEG tarball or its extracted folder) and
generic ImageFolder trees (e.g. one sub-folder of face photos per identity).

Everything is decoded once with Pillow into one uint8 tensor, because the experiments here
use small images that fit in memory and are iterated over for many epochs. Loading never
executes code from the data: only image bytes are read, only the Pillow decoders of
``recognition.files.DATASET_FORMATS`` run, and tar member names are checked.
Decoding is sequential on purpose: Pillow's JPEG header parsing holds the GIL, so a thread
pool was slower (measured: docs/recognition.md, "Datasets").
"""

from __future__ import annotations

import functools
import io
import os
import random
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from recognition.files import DATASET_DECODERS, DATASET_EXTENSIONS

CIFAR_SPLITS = ("train", "test")

# One image to decode: (name used in error messages and for sorting, file path or raw bytes).
_Entry = tuple[str, Path | bytes]


class ImageTensorDataset(Dataset):
    """Images held as one uint8 tensor [N, C, H, W] with int64 labels [N] and class names.

    Items are (float32 image in [0, 1], int label), the usual input of a classifier; keeping
    uint8 storage uses 4x less memory than float and makes subsets cheap views.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be int64 [{images.shape[0]}], got {labels.dtype} {tuple(labels.shape)}")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
            raise ValueError(f"labels must index into the {len(classes)} classes")
        self.images = images
        self.labels = labels
        self.classes = list(classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255), int(self.labels[index])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageTensorDataset:
        """Return a new dataset with the given samples (same class list, so labels keep their meaning)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageTensorDataset(self.images[index], self.labels[index], self.classes)


def default_data_dir() -> Path:
    """Folder with the project's data: $FACEGUARD_DATA, else ../shared/data next to the repository root."""
    env = os.environ.get("FACEGUARD_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_cifar10(
    source: str | Path, split: str = "train", per_class: int | None = None, seed: int | None = 0
) -> ImageTensorDataset:
    """Load a CIFAR-10 split from `cifar10_jpeg.tar.gz` (read in place) or its extracted folder.

    `per_class` keeps the first images of each class in sorted file-name order, so small CPU
    experiments always see the same images. Classes are sorted by name. Samples are then put
    in a random order fixed by `seed` (so any prefix mixes all classes); `seed=None`
    keeps them grouped by class in file order.
    """
    if split not in CIFAR_SPLITS:
        raise ValueError(f"split must be one of {CIFAR_SPLITS}, got {split!r}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be a positive number of images, got {per_class}")
    source = Path(source)
    if source.is_dir():
        dataset = _decode_entries(scan_image_folder(source / split), per_class=per_class, size=None)
    elif source.is_file():
        stat = source.stat()
        # shared by every call with this key: only the copy made by subset() below leaves
        dataset = _decoded_tar_split(str(source.resolve()), stat.st_mtime_ns, stat.st_size, split, per_class)
    else:
        raise FileNotFoundError(f"CIFAR-10 source not found: {source}")
    order = list(range(len(dataset)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    return dataset.subset(order)


def load_image_folder(root: str | Path, size: int | None = None) -> ImageTensorDataset:
    """Load a torchvision-style ImageFolder tree (`root/<class>/<image>`), classes sorted by name.

    Images are converted to RGB (after applying any EXIF rotation). With `size`, each image is
    resized so its shorter side is `size` and centre-cropped to size x size, so photos of
    different shapes can be stacked; without it all images must already share one size.
    """
    return _decode_entries(scan_image_folder(Path(root)), per_class=None, size=size)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in DATASET_EXTENSIONS


def scan_image_folder(root: Path) -> dict[str, list[_Entry]]:
    """Map each class sub-folder of `root` to its image files (non-recursive within a class)."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    entries = {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [p for p in class_dir.iterdir() if p.is_file() and _is_image_name(p.name)]
        entries[class_dir.name] = [(str(p), p) for p in files]
    return entries


@functools.lru_cache(maxsize=4)
def _decoded_tar_split(archive: str, mtime_ns: int, size: int, split: str, per_class: int | None
                       ) -> ImageTensorDataset:
    """One split of a CIFAR tarball, decoded once per process (callers get copies). Python's tar
    reader takes seconds to walk the archive's 60,000 members however few images are kept, and
    benchmarks and tests load the same small splits again and again; the file's modification time
    and size are part of the key, so a changed archive is read again."""
    return _decode_entries(_scan_tar(Path(archive), split), per_class=per_class, size=None)


def _scan_tar(archive: Path, split: str) -> dict[str, list[_Entry]]:
    """Read the bytes of every `<split>/<class>/<image>` member, refusing unsafe member names."""
    entries: dict[str, list[_Entry]] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"unsafe member name {member.name!r} in {archive}")
            parts = [p for p in path.parts if p != "."]
            if not member.isfile() or len(parts) != 3 or parts[0] != split or not _is_image_name(parts[2]):
                continue
            data = tar.extractfile(member).read()
            entries.setdefault(parts[1], []).append((f"{archive}:{member.name}", data))
    if not entries:
        raise ValueError(f"no {split}/<class>/<image> members in {archive}")
    return entries


def _decode_entries(entries: dict[str, list[_Entry]], per_class: int | None, size: int | None) -> ImageTensorDataset:
    """Decode the images of each class (sorted by name, first `per_class` kept) into one dataset."""
    classes = sorted(entries)
    if not classes:
        raise ValueError("no class folders found")
    arrays, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(entries[name], key=lambda entry: entry[0])[:per_class]
        if not files:
            raise ValueError(f"class {name!r} has no images")
        arrays.extend(decode_image(file_name, source, size) for file_name, source in files)
        labels.extend([label] * len(files))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)[:3]}...; pass size= to resize them")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageTensorDataset(images, torch.tensor(labels, dtype=torch.int64), classes)


def decode_image(name: str, source: Path | bytes, size: int | None) -> np.ndarray:
    """Decode one image to an RGB uint8 array [H, W, 3]; any decoding failure names the file."""
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(stream, formats=DATASET_DECODERS) as image:
            ImageOps.exif_transpose(image, in_place=True)
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if size is not None:
                rgb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BICUBIC)
            return np.asarray(rgb)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode image {name}: {error}") from error
