"""Reading uploads safely: multipart bodies streamed into the server's own folder, names made safe,
sizes and pixel counts checked before anything is decoded.

The multipart body is parsed as it arrives (python-multipart's streaming parser), each file part
written straight into a folder the caller chose inside the server's temporary folder, and counted:
a part over the byte limit stops the upload at once with a 413, so a huge upload never fills the
disk or the memory. A client that disconnects mid-upload leaves nothing behind (its partial files
are removed). Names are reduced to safe relative paths (:func:`safe_name`): no ``..``, no absolute
path, no control characters, so nothing can be written outside that folder.
"""
from __future__ import annotations

import os
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from recognition.files import PHOTO_DECODERS, PHOTO_EXTENSIONS, one_line

MEBIBYTE = 1024 * 1024
MAX_PART_NAME = 120  # characters kept of each folder or file name
MAX_DEPTH = 8  # folders kept of an uploaded relative path
MAX_FIELD_BYTES = 4096  # a text field (eps, method, identities)
PHOTO_FIELD = "photo"


@dataclass(frozen=True)
class Limits:
    """What one server accepts: bytes and megapixels per photo, photos per request and per job,
    photos waiting in the queue, and seconds a job is kept after its last use."""

    max_bytes: int = 25 * MEBIBYTE
    max_megapixels: float = 40.0
    max_files_per_request: int = 20
    max_job_photos: int = 1000
    max_queue: int = 200
    job_ttl: float = 3600.0

    def to_dict(self) -> dict:
        return {"max_bytes": self.max_bytes, "max_megapixels": self.max_megapixels,
                "max_files_per_request": self.max_files_per_request, "max_job_photos": self.max_job_photos,
                "max_queue": self.max_queue, "job_ttl_seconds": self.job_ttl}


class UploadError(Exception):
    """A refused request: HTTP ``status`` and a one-line ``message`` naming the file and reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    """One uploaded file: its safe relative name, where its bytes were written, and their count."""

    name: str
    path: Path
    size: int = 0


@dataclass
class Form:
    """A parsed multipart body: the text fields and the uploaded ``photo`` files."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)

    def discard(self) -> None:
        """Remove every uploaded file that is still where the upload wrote it."""
        for upload in self.files:
            upload.path.unlink(missing_ok=True)


def _clean_part(part: str) -> str:
    """One path component without control or format characters, surrounding spaces and leading
    dots, at most :data:`MAX_PART_NAME` characters (the extension kept)."""
    text = "".join(ch for ch in unicodedata.normalize("NFC", part) if unicodedata.category(ch)[0] != "C")
    text = text.strip().lstrip(".").strip()
    if len(text) > MAX_PART_NAME:
        suffix = PurePosixPath(text).suffix[:10]
        text = text[:MAX_PART_NAME - len(suffix)] + suffix
    return text


def safe_name(name: str | None) -> str:
    """A relative POSIX path made from an uploaded file name (a browser's folder upload sends
    ``folder/sub/photo.jpg``): separators ``/`` and ``\\`` split it, ``.``, ``..`` and empty parts
    are dropped, so it can only name a file below the folder it is joined to; ``photo`` when nothing
    is left. The file name keeps its extension."""
    parts = [_clean_part(part) for part in (name or "").replace("\\", "/").split("/")]
    parts = [part for part in parts if part and part not in (".", "..")]
    if not parts:
        return "photo"
    return "/".join(parts[-MAX_DEPTH:])


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem (2).ext`` etc. when it is in ``taken`` (compared case-insensitively, as
    ``faceguard protect`` compares output names); the result is added to ``taken``."""
    path, k, candidate = PurePosixPath(name), 1, name
    while candidate.lower() in taken:
        k += 1
        candidate = str(path.with_name(f"{path.stem} ({k}){path.suffix}"))
    taken.add(candidate.lower())
    return candidate


def check_photo(upload: Upload, limits: Limits) -> None:
    """Refuse, before decoding any pixel, what ``faceguard protect`` would not read or what is
    too large: an unknown extension (415), too many bytes (413), a file Pillow's accepted decoders
    cannot open (415), more megapixels than the limit or a decompression bomb (413)."""
    name = upload.name
    if PurePosixPath(name).suffix.lower() not in PHOTO_EXTENSIONS:
        raise UploadError(415, f"{name}: not a JPEG, PNG, WebP, BMP or TIFF file name "
                               f"(extensions: {', '.join(sorted(PHOTO_EXTENSIONS))})")
    if upload.size == 0:
        raise UploadError(400, f"{name}: the file is empty")
    if upload.size > limits.max_bytes:
        raise UploadError(413, f"{name}: {upload.size} bytes is over this server's limit of {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload.path, formats=PHOTO_DECODERS) as image:  # reads the header only
                width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(413, f"{name}: refused as a decompression bomb ({one_line(exc)})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UploadError(415, f"{name}: not a readable JPEG, PNG, WebP, BMP or TIFF image") from exc
    megapixels = width * height / 1e6
    if megapixels > limits.max_megapixels:
        raise UploadError(413, f"{name}: {width} x {height} pixels ({megapixels:.1f} megapixels) is over this "
                               f"server's limit of {limits.max_megapixels:g} megapixels")


class _PartReader:
    """The python-multipart callbacks of one request: text fields kept (bounded), ``photo`` parts
    each written to a file of its own in ``folder`` and counted against the byte limit."""

    def __init__(self, folder: Path, limits: Limits) -> None:
        self.folder, self.limits, self.form = folder, limits, Form()
        self.header_field, self.header_value, self.headers = b"", b"", {}
        self.name, self.upload, self.handle, self.value = "", None, None, b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field_data,
                "on_header_value": self.header_value_data, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_done, "on_part_data": self.data, "on_part_end": self.end}

    def begin(self) -> None:
        self.headers, self.header_field, self.header_value = {}, b"", b""

    def header_field_data(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def headers_done(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        self.value, self.upload = b"", None
        if b"filename" in options and self.name == PHOTO_FIELD:
            if len(self.form.files) >= self.limits.max_files_per_request:
                raise UploadError(413, f"more than {self.limits.max_files_per_request} photos in one request")
            filename = options[b"filename"].decode("utf-8", "replace")  # browsers send UTF-8 bytes
            # a file of its own (created exclusively): requests uploading into one job's folder at
            # the same time never share a path
            descriptor, path = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=self.folder)
            self.upload = Upload(safe_name(filename), Path(path))
            self.form.files.append(self.upload)
            self.handle = os.fdopen(descriptor, "wb")

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.upload is not None:
            self.upload.size += end - start
            if self.upload.size > self.limits.max_bytes:
                raise UploadError(413, f"{self.upload.name}: over this server's limit of "
                                       f"{self.limits.max_bytes} bytes per photo")
            self.handle.write(data[start:end])
        else:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD_BYTES:
                raise UploadError(413, f"form field {self.name!r} is over {MAX_FIELD_BYTES} bytes")

    def end(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        elif self.name:
            self.form.fields[self.name] = self.value.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


async def _read_fields(request: object) -> dict[str, str]:
    """The fields of a URL-encoded body of at most :data:`MAX_FIELD_BYTES` bytes."""
    from urllib.parse import parse_qsl

    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FIELD_BYTES:
            raise UploadError(413, f"form body over {MAX_FIELD_BYTES} bytes")
    return dict(parse_qsl(body.decode("utf-8", "replace")))


async def read_form(request: object, folder: Path, limits: Limits) -> Form:
    """The multipart body of a Starlette ``request``, its ``photo`` files streamed into ``folder``
    (a URL-encoded body gives fields only).

    Raises :class:`UploadError` (its files removed) for a body that is not multipart or breaks a
    limit; a client disconnect (Starlette's ``ClientDisconnect``) also removes them and propagates.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"application/x-www-form-urlencoded":  # fields only (a job's options)
        return Form(await _read_fields(request))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(415, "expected a multipart/form-data body with a 'photo' file field")
    folder.mkdir(parents=True, exist_ok=True)
    reader = _PartReader(folder, limits)
    parser = MultipartParser(options[b"boundary"], reader.callbacks())
    total_limit = limits.max_files_per_request * (limits.max_bytes + 64 * 1024) + MEBIBYTE
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > total_limit:
                raise UploadError(413, f"request body over {total_limit} bytes")
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        reader.close()
        reader.form.discard()
        raise
    except Exception as exc:
        reader.close()
        reader.form.discard()
        if type(exc).__name__ == "ClientDisconnect":
            raise
        raise UploadError(400, f"malformed multipart body ({one_line(exc)})") from exc
    reader.close()
    return reader.form
