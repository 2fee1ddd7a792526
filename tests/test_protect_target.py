"""faceguard protect --method target on real photos: target people are read from a folder (bad
photos reported and skipped), each face is pulled toward the target least like it, the saved face
moves toward that target in the ensemble's recognizers, and the CLI records the target folder."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import require_data
from test_protect_support import one_thread  # noqa: F401 (autouse)

TARGET_PHOTOS = {"howard": ["howard/howard_12.png", "howard/howard_14.png"], "raj": ["raj/raj_1.png"]}
ME = "photos/kit_harington/john2.jpg"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("target")
    for person, files in TARGET_PHOTOS.items():
        (root / "targets" / person).mkdir(parents=True)
        for rel in files:
            shutil.copy(require_data("realfaces") / rel, root / "targets" / person)
    (root / "targets" / "nobody").mkdir()
    (root / "targets" / "nobody" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "me").mkdir()
    shutil.copy(require_data(ME), root / "me")
    return root


@pytest.fixture(scope="module")
def targeted(folders, dlib_cache):
    from faceguard.protect.protector import Protector
    from recognition.files import load_rgb

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))
        protector = Protector(method="target", eps=16, steps=8, step_size=0.25, device="cpu")
    targets = protector.load_targets(folders / "targets")
    photo = load_rgb(folders / "me" / "john2.jpg")
    return protector, targets, photo, protector.protect(photo)


def test_targets_are_the_people_with_faces_each_centre_unit_length(targeted, capfd):
    protector, targets, _, _ = targeted
    assert targets.names == ["howard", "raj"] and len(targets.sha256) == 64
    assert len(targets.centres) == len(protector.ensemble)
    for centres in targets.centres:
        assert centres.shape[0] == 2
        torch.testing.assert_close(centres.norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)


def test_the_face_is_pulled_toward_the_farthest_target_within_the_bound(targeted):
    from faceguard.protect.evasion import saved_views

    protector, targets, photo, result = targeted
    face = result.faces[0]
    clean = saved_views(photo, [protector.detect(photo)[0].landmarks], protector.ensemble, protector.device)
    similarity = torch.stack([(e @ c.T)[0] for e, c in zip(clean, targets.centres)]).mean(0)
    assert face.target == targets.names[int(similarity.argmin())]
    # the loss is minus the mean cosine to the target's centres: crafting and saving both lower it
    assert face.loss_clean == pytest.approx(-float(similarity.min()), abs=0.02)
    assert face.loss_crafted < face.loss_clean - 0.07  # measured: 0.145 lower
    assert face.loss_saved is not None and face.loss_saved < face.loss_clean - 0.07
    assert 0 < np.abs(result.image.astype(int) - photo.astype(int)).max() <= 16


def test_target_refuses_what_it_cannot_do(folders, dlib_cache, tmp_path):
    from faceguard.protect.protector import Protector
    from recognition.files import load_rgb

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))
        protector = Protector(method="target", steps=1, ensemble=["profile"], device="cpu")
    with pytest.raises(ValueError, match="needs --targets"):
        protector.protect(load_rgb(folders / "me" / "john2.jpg"))
    (tmp_path / "empty" / "someone").mkdir(parents=True)
    with pytest.raises(ValueError, match="no face found"):
        protector.load_targets(tmp_path / "empty")
    with pytest.raises(ValueError, match="belong to the target method"):
        Protector(method="alignment", device="cpu").load_targets(folders / "targets")


def test_cli_records_the_target_folder_and_each_faces_target(folders, dlib_cache, monkeypatch, capsys):
    from faceguard.cli import main

    monkeypatch.setenv("FACEGUARD_CACHE", str(dlib_cache))
    common = ["protect", str(folders / "me"), "--method", "target", "--steps", "2", "--device", "cpu", "--quiet"]
    assert main([*common[:4], "--device", "cpu"]) == 2  # --method target without --targets
    assert "needs --targets" in capsys.readouterr().err
    out = folders / "out"
    assert main([*common, "--targets", str(folders / "targets"), "--out", str(out)]) == 0
    assert "targets/nobody/broken.jpg" in capsys.readouterr().err  # reported, the run goes on
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["settings"]["targets_sha256"]) == 64
    entry = manifest["files"]["john2.jpg"]
    assert entry["status"] == "protected" and entry["face_details"][0]["target"] in TARGET_PHOTOS
