"""``OUT/manifest.json`` of a protect run, kept current by an append-only journal.

The manifest holds the run's settings, one entry per input file and the identity centres (and
clusters). Rewriting the whole file after every photo costs time linear in the entries so far, so
a corpus of n photos would cost O(n²). Instead, each change is one JSON line appended to
``OUT/.manifest.journal`` (constant cost per photo), and ``manifest.json`` is rewritten atomically
only when the journal has grown as large as it and when the run ends: the bytes written stay linear
in the number of photos. Measured costs: docs/protect.md ("The journal").

A killed run therefore loses at most the photo in flight: the next run reads ``manifest.json``,
replays the journal over it (skipping the line a kill cut short) and carries on. Replaying is
idempotent, so a kill between a rewrite and the journal's removal is harmless too. Mid-run,
``manifest.json`` on its own is always complete JSON but may lag the journal;
:func:`read_manifest` gives the current state.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from recognition.files import file_sha256, write_bytes_atomic

MANIFEST = "manifest.json"
JOURNAL = ".manifest.journal"
FINISHED = ("protected", "no_face")
VERSION = 2  # 2: crafting settings nested under "crafting" with their own version (CraftSettings)


def _journal_records(path: Path) -> list[dict]:
    """The journal's records in order; a line that is not a whole JSON object (the one a kill cut
    short) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _merge(files: dict, centres: dict, clusters: dict, record: dict) -> None:
    """Apply one journal record: a ``file``'s ``entry``, new ``centres``, members added to ``clusters``."""
    if "file" in record:
        files[record["file"]] = record["entry"]
    for name, centre in record.get("centres", {}).items():
        centres.setdefault(name, centre)
    for name, members in record.get("clusters", {}).items():
        kept = clusters.setdefault(name, [])
        kept.extend(rel for rel in members if rel not in kept)


class Manifest:
    """Settings, per-file entries and identity centres/clusters of one output folder.

    Opening it loads ``manifest.json`` and its journal when their settings equal ``settings``
    (otherwise every photo is protected again) and rewrites the file under the current settings;
    ``upgrade`` maps settings stored by an older version to today's layout before comparing.
    :meth:`add` records a change, :meth:`close` writes the final file.

    ``shared``: several processes (torchrun ranks) record into the same journal at once, each line
    one appended write. None of them rewrites ``manifest.json`` mid-run (that would drop lines
    the others append); the ``owner`` (rank 0, which opens it first) writes it at the start and,
    at :meth:`close`, after replaying every process's lines. The others never write the file.
    """

    def __init__(self, path: Path, settings: dict, command: str,
                 upgrade: Callable[[dict], dict] | None = None, shared: bool = False, owner: bool = True) -> None:
        self.path, self.settings, self.command = Path(path), settings, command
        self.shared, self.owner = shared, owner
        self.journal = self.path.with_name(JOURNAL)
        data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        stored = data.get("settings", {})
        same = (upgrade(stored) if upgrade else stored) == json.loads(json.dumps(settings))
        if data and not same:
            print(f"protect: settings differ from {self.path}; every photo is protected again", file=sys.stderr)
        self.files: dict[str, dict] = data.get("files", {}) if same else {}
        self.centres: dict[str, list[float]] = data.get("centres", {}) if same else {}
        self.clusters: dict[str, list[str]] = data.get("clusters", {}) if same else {}
        if same:
            for record in _journal_records(self.journal):
                _merge(self.files, self.centres, self.clusters, record)
        self._journal_bytes = 0
        if owner:
            self.save()

    def add(self, record: dict) -> None:
        """Apply ``record`` and append it to the journal; rewrite the manifest once the journal
        is as large as it (so each rewrite is paid for by as many bytes of appended lines)."""
        _merge(self.files, self.centres, self.clusters, record)
        line = (json.dumps(record) + "\n").encode()
        with open(self.journal, "ab") as handle:
            handle.write(line)
        self._journal_bytes += len(line)
        if not self.shared and self._journal_bytes >= self._manifest_bytes:
            self.save()

    def record_file(self, rel: str, entry: dict) -> None:
        """The outcome of one input file (``rel`` relative to PHOTOS)."""
        self.add({"file": rel, "entry": entry})

    def finished(self, rel: str, input_sha: str, out_dir: Path) -> bool:
        """Whether ``rel`` was finished under these settings from an input with this SHA-256 and
        its output is still the file then written."""
        entry = self.files.get(rel)
        if not entry or entry.get("status") not in FINISHED or entry.get("input_sha256") != input_sha:
            return False
        output = out_dir / entry["output"]
        return output.is_file() and file_sha256(output) == entry.get("output_sha256")

    def save(self) -> None:
        """Rewrite ``manifest.json`` atomically with everything so far, then drop the journal."""
        data = (json.dumps(self.state(), indent=1) + "\n").encode()
        write_bytes_atomic(self.path, data)
        self.journal.unlink(missing_ok=True)
        self._manifest_bytes, self._journal_bytes = len(data), 0

    def close(self) -> None:
        """Write the final ``manifest.json`` (no journal is left behind); a shared manifest's owner
        first replays what every process appended (call it when they have all finished)."""
        if not self.owner:
            return
        if self.shared:
            for record in _journal_records(self.journal):
                _merge(self.files, self.centres, self.clusters, record)
        if self._journal_bytes or self.journal.is_file():
            self.save()

    def state(self) -> dict:
        """The manifest as written to ``manifest.json``."""
        return {"version": VERSION, "command": self.command, "settings": self.settings,
                "files": dict(sorted(self.files.items())), "centres": self.centres, "clusters": self.clusters}


def read_manifest(out: Path) -> dict:
    """The current manifest of output folder ``out``, journal included (also while a run is going
    on or after it was killed); read-only."""
    path = Path(out) / MANIFEST
    data = json.loads(path.read_text(encoding="utf-8"))
    for record in _journal_records(path.with_name(JOURNAL)):
        _merge(data["files"], data["centres"], data["clusters"], record)
    return data
