"""What one worker process does: protect one photo as ``faceguard protect`` does, and run
``faceguard check`` on a job's folders, with its models loaded once and reused.

Protection goes through the CLI's own per-photo function (:func:`faceguard.protect.folder._protect_one`),
so a served photo is named, decoded, crafted, written and measured exactly as in a protected folder
(EXIF orientation, alpha, lossless stays lossless, JPEG re-encoded with its own tables) and its record
has the same keys as a manifest entry. A :class:`~faceguard.protect.protector.Protector` is built per
(method, ε, strength) asked for and kept (the last :data:`KEPT_PROTECTORS`); they share one MTCNN detector.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

from faceguard.settings import DEFAULT_STRENGTH
from recognition.files import file_sha256, one_line

KEPT_PROTECTORS = 2


class Engine:
    """The models of one worker: protectors by (method, ε, strength), the check's recognizer, one detector.

    ``changes`` override crafting settings for every method (e.g. ``{"steps": 2}`` for a quick
    server, ``faceguard serve --steps``); ``preload`` (method, ε, strength) builds that protector now, so
    the first upload does not pay for it.
    """

    def __init__(self, profile: str | Path | None = None, device: str = "cpu", changes: dict | None = None,
                 preload: tuple[str, float, str] | None = None) -> None:
        from recognition.detection import FaceDetector
        from recognition.device import resolve_device

        self.profile, self.device = profile, resolve_device(device)
        self.changes = dict(changes or {})
        self.detector = FaceDetector(device=self.device)
        self._protectors: OrderedDict[tuple[str, float, str], object] = OrderedDict()
        self._describer = None
        if preload is not None:
            self.protector(*preload)

    def protector(self, method: str, eps: float, strength: str = DEFAULT_STRENGTH) -> object:
        """The protector for ``method`` at ``eps`` and ``strength`` (built on first use, the least
        recent dropped)."""
        from faceguard.protect.protector import Protector

        key = (method, float(eps), strength)
        if key not in self._protectors:
            while len(self._protectors) >= KEPT_PROTECTORS:
                self._protectors.popitem(last=False)
            self._protectors[key] = Protector(self.profile, device=self.device, detector=self.detector,
                                              method=method, eps=float(eps), strength=strength, **self.changes)
        self._protectors.move_to_end(key)
        return self._protectors[key]

    def settings(self, method: str, eps: float, strength: str = DEFAULT_STRENGTH) -> dict:
        """The manifest ``settings`` of a folder protected with this method, ε and strength, as the CLI records
        them (``identities`` is the job's, set when its manifest is written)."""
        from faceguard.protect.folder import FolderOptions, _settings

        return _settings(self.protector(method, eps, strength), FolderOptions(), {})

    def protect_file(self, source: str, target: str, method: str, eps: float,
                     strength: str = DEFAULT_STRENGTH) -> dict:
        """Protect the photo ``source`` into ``target`` (same format); its manifest entry, plus the
        run's manifest ``settings`` under that key (the job keeps them). Never raises: a failure is
        an ``error`` entry with a one-line reason, as in ``faceguard protect``."""
        from faceguard.protect.folder import _protect_one
        from faceguard.protect.photo import read_photo

        start, source_path, target_path = time.perf_counter(), Path(source), Path(target)
        try:
            protector = self.protector(method, eps, strength)
            faces = protector.detect(read_photo(source_path).pixels)
            entry = _protect_one(protector, source_path, target_path, "keep", faces, [None] * len(faces))
            entry |= {"input_sha256": file_sha256(source_path), "output_sha256": file_sha256(target_path),
                      "eps": protector.eps, "method": method, "strength": strength,
                      "settings": self.settings(method, eps, strength)}
        except Exception as exc:  # one bad photo must not stop the server
            target_path.unlink(missing_ok=True)
            entry = {"status": "error", "reason": one_line(exc)}
        return entry | {"seconds": round(time.perf_counter() - start, 3)}

    def check(self, originals: str, protected: str, identities: str) -> dict:
        """``faceguard check ORIGINALS PROTECTED --identities IDENTITIES --json`` as a dict."""
        from faceguard.protect.check import FaceDescriber, check_folders

        if self._describer is None:
            self._describer = FaceDescriber(self.device)
            self._describer.detector = self.detector
        return check_folders(Path(originals), Path(protected), identities, describer=self._describer).to_dict()

    def ping(self) -> str:
        """Nothing: a call that returns once this worker's models are loaded."""
        return "ok"
