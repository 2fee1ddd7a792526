"""The protect manifest's journal: a killed run's finished photos survive, a half-written line is
skipped, other settings start afresh, and the file is rewritten O(log n) times for n photos."""
from __future__ import annotations

import json

from faceguard.protect.manifest import JOURNAL, MANIFEST, Manifest, read_manifest

SETTINGS = {"eps": 16.0, "steps": 10}


def entry(k: int) -> dict:
    return {"input": f"p{k}.jpg", "status": "protected", "output": f"p{k}.jpg", "faces": 1,
            "face_details": [{"box": [1.0, 2.0, 3.0, 4.0], "loss_clean": 1.0, "loss_crafted": 0.8}]}


def test_journal_survives_a_kill_and_is_replayed(tmp_path):
    manifest = Manifest(tmp_path / MANIFEST, SETTINGS, "cmd")
    manifest.add({"centres": {"alice": [0.6, 0.8]}, "clusters": {"person-01": ["p0.jpg", "p1.jpg"]}})
    count = 0
    while count < 10 or not (tmp_path / JOURNAL).is_file():
        manifest.record_file(f"p{count}.jpg", entry(count))
        count += 1
    # no close(): the process is "killed" here, with lines still in the journal
    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert len(on_disk["files"]) < count  # the file itself lags ...
    assert read_manifest(tmp_path) == manifest.state()  # ... the journal has the rest
    reopened = Manifest(tmp_path / MANIFEST, SETTINGS, "cmd")
    assert sorted(reopened.files) == sorted(f"p{k}.jpg" for k in range(count))
    assert reopened.centres == {"alice": [0.6, 0.8]} and reopened.clusters == {"person-01": ["p0.jpg", "p1.jpg"]}
    assert not (tmp_path / JOURNAL).exists()  # folded into manifest.json on opening
    assert json.loads((tmp_path / MANIFEST).read_text()) == reopened.state()


def test_replay_is_idempotent_and_skips_a_cut_line(tmp_path):
    manifest = Manifest(tmp_path / MANIFEST, SETTINGS, "cmd")
    record = {"centres": {"bob": [1.0, 0.0]}, "clusters": {"person-01": ["a.jpg"]}}
    manifest.add(record)
    manifest.add(record)
    manifest.record_file("a.jpg", entry(0))
    with open(tmp_path / JOURNAL, "ab") as handle:  # what a kill mid-write leaves
        handle.write(b'{"file": "b.jpg", "entry": {"status": "prot')
    reopened = Manifest(tmp_path / MANIFEST, SETTINGS, "cmd")
    assert list(reopened.files) == ["a.jpg"] and reopened.clusters == {"person-01": ["a.jpg"]}
    assert reopened.centres == {"bob": [1.0, 0.0]}


def test_other_settings_discard_the_journal(tmp_path, capsys):
    manifest = Manifest(tmp_path / MANIFEST, SETTINGS, "cmd")
    for k in range(3):
        manifest.record_file(f"p{k}.jpg", entry(k))
    assert read_manifest(tmp_path)["files"]
    changed = Manifest(tmp_path / MANIFEST, {**SETTINGS, "eps": 8.0}, "cmd")
    assert changed.files == {} and not (tmp_path / JOURNAL).exists()
    assert "settings differ" in capsys.readouterr().err
    assert read_manifest(tmp_path)["files"] == {}


def test_rewrites_grow_logarithmically_and_close_leaves_no_journal(tmp_path, monkeypatch):
    saves = []
    original = Manifest.save
    monkeypatch.setattr(Manifest, "save", lambda self: saves.append(len(self.files)) or original(self))
    manifest = Manifest(tmp_path / MANIFEST, SETTINGS, "cmd")
    for k in range(3000):
        manifest.record_file(f"p{k:04d}.jpg", entry(k))
    assert len(saves) <= 16, saves  # one rewrite per photo would be 3,001
    manifest.close()
    assert not (tmp_path / JOURNAL).exists()
    assert len(json.loads((tmp_path / MANIFEST).read_text())["files"]) == 3000


def test_a_manifest_from_before_versioned_settings_resumes(tmp_path):
    """Version-1 manifests stored the crafting settings flat; they are read in today's layout, so
    a folder protected then is not protected again under the same settings."""
    from faceguard.protect.folder import upgrade_settings
    from faceguard.settings import protect_settings

    old = {"eps": 16.0, "steps": 10, "restarts": 1, "variant": "joint", "regularizer": None, "reg_weight": 0.0,
           "seed": 0, "backend": "fd-frozen", "format": "keep", "identities": "folders", "profile_sha256": "ab"}
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 1, "command": "c", "settings": old,
                                                 "files": {"p0.jpg": entry(0)}, "centres": {}, "clusters": {}}))
    current = {"crafting": protect_settings("alignment").to_dict(), "format": "keep", "identities": "folders",
               "profile_sha256": "ab", "aligned": False}
    assert sorted(Manifest(tmp_path / MANIFEST, current, "cmd", upgrade_settings).files) == ["p0.jpg"]
    assert json.loads((tmp_path / MANIFEST).read_text())["settings"] == current  # rewritten in today's layout
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 1, "command": "c", "settings": {**old, "steps": 20},
                                                 "files": {"p0.jpg": entry(0)}, "centres": {}, "clusters": {}}))
    assert Manifest(tmp_path / MANIFEST, current, "cmd", upgrade_settings).files == {}


def test_crafting_settings_of_version_2_resume_with_the_ensemble_of_then(tmp_path):
    from faceguard.protect.folder import upgrade_settings
    from faceguard.settings import protect_settings

    evade = protect_settings(method="evade", ensemble=("profile", "dlib-resnet"))
    stored = {key: value for key, value in evade.to_dict().items() if key != "ensemble"} | {"version": 2}
    settings = {"crafting": stored, "format": "keep", "identities": "folders", "profile_sha256": "ab", "aligned": False}
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 2, "command": "c", "settings": settings,
                                                 "files": {"p0.jpg": entry(0)}, "centres": {}, "clusters": {}}))
    current = {**settings, "crafting": evade.to_dict()}
    assert sorted(Manifest(tmp_path / MANIFEST, current, "cmd", upgrade_settings).files) == ["p0.jpg"]
    other = {**settings, "crafting": evade.replace(ensemble=("sface",)).to_dict()}
    assert Manifest(tmp_path / MANIFEST, other, "cmd", upgrade_settings).files == {}
