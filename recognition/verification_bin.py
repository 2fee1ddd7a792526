"""Face-verification pair sets: the insightface ``.bin`` format (read safely, and written) and
plain pairs lists over an image folder.

A ``.bin`` file (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ``vgg2_fp.bin`` of insightface's
``faces_emore`` / ``faces_webface`` packages) is a pickle of a 2-tuple ``(bins, issame)``: ``bins``
holds 2·P encoded images (JPEG/PNG bytes; images 2i and 2i+1 form pair i) and ``issame`` P bools.
The official files were pickled by Python 2, so their images are ``str`` objects that Python 3
reads as ``bytes`` with ``encoding="bytes"``.

Safety: a pickle can name any importable callable (``os.system``, ...) and have it called while
loading. :class:`RestrictedUnpickler` refuses *every* global lookup (``find_class``) and persistent
id, so only what pickle builds by itself can appear: tuples, lists, dicts, ``bytes``,
``bytearray`` (protocol 5), ``str``, numbers, ``True``/``False``/``None``. That is all the official
files hold. Files whose lists hold numpy objects (``numpy.bool_`` flags, image arrays) need numpy's
reconstructor functions and are refused with an explanation, as are Python-3 protocol-0-2 pickles
of ``bytes`` (built through ``_codecs.encode``): convert such a file once with trusted code. The
writer here uses protocol 4, whose ``bytes`` need no global.

A pairs list is a text file of lines ``<image A> <image B> <1|0>`` (paths relative to the image
folder, 1 = same person); blank lines and lines starting with ``#`` are skipped.
"""
from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from recognition.datasets import decode_image
from recognition.files import write_bytes_atomic


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that cannot import or call anything: every global is refused."""

    def find_class(self, module: str, name: str):  # noqa: D102 - documented in the class
        raise pickle.UnpicklingError(f"refusing global {module}.{name}: a .bin file may only hold plain "
                                     "containers, bytes and bools")

    def persistent_load(self, pid):  # noqa: D102
        raise pickle.UnpicklingError("refusing persistent id in a .bin file")


@dataclass
class PairSet:
    """A verification set: 2·P encoded images (pair i = images 2i, 2i+1), P same/different flags."""

    name: str
    images: list[bytes]
    issame: np.ndarray

    def __post_init__(self) -> None:
        self.issame = np.asarray(self.issame, dtype=bool)
        if self.issame.ndim != 1 or len(self.images) != 2 * len(self.issame):
            raise ValueError(f"{self.name}: {len(self.images)} images for {self.issame.size} pairs "
                             "(need exactly two images per pair)")
        if not self.issame.any() or self.issame.all():
            raise ValueError(f"{self.name}: needs both same-person and different-person pairs")

    def decode(self, size: int | None, channels: int = 3) -> np.ndarray:
        """All images as uint8 [2P, C, H, W] (RGB, or gray with ``channels=1``); with ``size``
        fitted by Pillow to size x size (shorter side, bicubic, centre crop) as the training
        loaders do, otherwise at their own (common) size."""
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        arrays = []
        for index, data in enumerate(self.images):
            rgb = decode_image(f"{self.name} image {index}", data, size)
            arrays.append(np.asarray(Image.fromarray(rgb).convert("L"))[..., None] if channels == 1 else rgb)
        if len({array.shape for array in arrays}) > 1:
            raise ValueError(f"{self.name}: images have different sizes; pass size to fit them")
        return np.stack(arrays).transpose(0, 3, 1, 2).copy()


def read_bin(path: str | Path) -> PairSet:
    """Read an insightface verification ``.bin`` without executing anything from it.

    Raises ValueError naming the file for anything that is not ``(list of image bytes, list of
    bools)`` of matching lengths, including pickles that ask for a global (see the module doc).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            content = RestrictedUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError) as error:
        raise ValueError(f"{path}: not a plain-data .bin pickle ({error})") from error
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise ValueError(f"{path}: expected a pickled (images, issame) pair, got {type(content).__name__}")
    images, issame = content
    if not isinstance(images, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in images):
        raise ValueError(f"{path}: the first element must be a list of encoded image bytes")
    if not isinstance(issame, (list, tuple)) or not all(isinstance(s, bool) for s in issame):
        raise ValueError(f"{path}: the second element must be a list of bools")
    try:
        return PairSet(path.stem, [bytes(b) for b in images], np.array(issame, dtype=bool))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def encode_image(image: np.ndarray | bytes, fmt: str = "PNG") -> bytes:
    """Encode a uint8 image ([H, W] gray, [H, W, 3] RGB) with Pillow; bytes pass through as is."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"images must be uint8 [H, W] or [H, W, 3], got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def write_bin(path: str | Path, pairs: Sequence[tuple[np.ndarray | bytes, np.ndarray | bytes, bool]],
              fmt: str = "PNG") -> Path:
    """Write pairs ``(image A, image B, same person?)`` as an insightface-format ``.bin``.

    Images are uint8 arrays (encoded losslessly as PNG by default, or ``fmt="JPEG"``) or already
    encoded bytes. Pickled with protocol 4 (plain ``bytes`` opcodes, readable by insightface's
    loader and by :func:`read_bin`), written atomically.
    """
    bins, issame = [], []
    for first, second, same in pairs:
        bins += [encode_image(first, fmt), encode_image(second, fmt)]
        issame.append(bool(same))
    PairSet(Path(path).stem, bins, np.array(issame))  # validates before writing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, pickle.dumps((bins, issame), protocol=4))
    return path


def read_pairs_list(pairs_file: str | Path, image_root: str | Path) -> PairSet:
    """A PairSet from a text list of ``<image A> <image B> <1|0>`` lines under ``image_root``.

    Paths must stay inside ``image_root``; errors name the list file and line.
    """
    pairs_file, root = Path(pairs_file), Path(image_root).resolve()
    images, issame = [], []
    for number, line in enumerate(pairs_file.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise ValueError(f"{pairs_file} line {number}: expected '<image A> <image B> <1|0>'")
        for relative in fields[:2]:
            file = (root / relative).resolve()
            if not file.is_relative_to(root) or not file.is_file():
                raise ValueError(f"{pairs_file} line {number}: {relative} is not a file under {root}")
            images.append(file.read_bytes())
        issame.append(fields[2] == "1")
    try:
        return PairSet(pairs_file.stem, images, np.array(issame, dtype=bool))
    except ValueError as error:
        raise ValueError(f"{pairs_file}: {error}") from error


def sample_pairs(labels: Sequence[int] | np.ndarray, same: int, different: int,
                 seed: int = 0) -> list[tuple[int, int, bool]]:
    """Seeded random index pairs ``(i, j, same)`` of distinct images: ``same`` genuine pairs (same
    label) and ``different`` impostor pairs, without repeats, genuine first then impostor.

    Used to turn an identity-labelled data set (e.g. ORL) into a verification set.
    """
    labels = np.asarray(labels)
    first, second = np.triu_indices(len(labels), k=1)
    genuine = labels[first] == labels[second]
    rng = np.random.default_rng(seed)
    chosen = []
    for mask, count, flag in ((genuine, same, True), (~genuine, different, False)):
        candidates = np.flatnonzero(mask)
        if count > len(candidates):
            raise ValueError(f"asked for {count} {'same' if flag else 'different'}-person pairs, "
                             f"only {len(candidates)} exist")
        picked = np.sort(rng.choice(candidates, size=count, replace=False))
        chosen += [(int(first[k]), int(second[k]), flag) for k in picked]
    return chosen
