"""``faceguard serve`` end to end with the real models: the default method (evade, its ensemble and
MTCNN) protects real photos of the bundle through ``/api/protect`` and the job API, and the job's
check runs dlib-resnet, as ``faceguard check`` does. Only the step count is cut (2), for time."""
from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from faceguard.protect.check import CAVEAT
from faceguard.serve.app import RECORD_HEADER, ServeConfig, create_app
from faceguard.settings import protect_settings
from test_protect_support import one_thread, require_data  # noqa: F401

PHOTOS = ("kit_harington/john2.jpg", "kit_harington/john1.jpg")


@pytest.fixture(scope="module")
def client(tmp_path_factory, dlib_cache):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))
        parent = tmp_path_factory.mktemp("serve")
        app = create_app(ServeConfig(workers=0, changes={"steps": 2}, temp_parent=parent))
        with TestClient(app) as test_client:
            yield test_client
        assert list(parent.iterdir()) == []


def test_protect_a_real_photo_with_the_default_method(client):
    path = require_data("photos") / PHOTOS[0]
    response = client.post("/api/protect", files={"photo": (path.name, path.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    record = json.loads(response.headers[RECORD_HEADER])
    assert record["status"] == "protected" and record["method"] == "evade" and record["eps"] == 16
    assert record["strength"] == "mid"
    assert record["faces"] >= 1 and record["format"] == "JPEG" and record["lossy"] is True
    out, original = Image.open(io.BytesIO(response.content)), Image.open(path)
    assert out.format == "JPEG" and out.size == original.size
    assert 0 < record["linf"] <= 40 and record["ssim"] > 0.9
    # the saved face moved away from its clean embeddings (the crafted loss also holds the SSIM penalty)
    assert all(face["loss_saved"] < face["loss_clean"] for face in record["face_details"])
    assert not np.array_equal(np.asarray(out), np.asarray(original))


def test_a_job_of_real_photos_is_checked_with_dlib_resnet(client):
    files = [("photo", (f"me/{rel.split('/')[1]}", (require_data("photos") / rel).read_bytes())) for rel in PHOTOS]
    job = client.post("/api/jobs", files=files, data={"eps": "16", "strength": "high"}).json()
    for _ in range(600):
        job = client.get(f"/api/jobs/{job['id']}").json()
        if job["done"]:
            break
        time.sleep(0.2)
    assert job["counts"]["protected"] == 2, job
    job = client.post(f"/api/jobs/{job['id']}/check").json()
    assert job["check_status"] == "done", job["check"]
    check = job["check"]
    assert check["model"] == "dlib-resnet" and check["caveat"] == CAVEAT
    verdicts = {photo["rel"]: photo for photo in check["photos"]}
    assert set(verdicts) == {"me/john1.jpg", "me/john2.jpg"}
    for photo in verdicts.values():  # one person: each is compared with the other's clean photo
        assert photo["status"] in ("matches", "evades") and photo["basis"] == "other photos"
        assert photo["person_distance"] > 0
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/jobs/{job['id']}/download").content))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["settings"]["crafting"]["steps"] == 2 and manifest["settings"]["identities"] == "single"
    shaping = ("chroma", "grid", "budget_floor", "feather", "regularizer")  # set by --strength
    high = protect_settings(strength="high").to_dict()
    assert {key: manifest["settings"]["crafting"][key] for key in shaping} == {key: high[key] for key in shaping}
    assert high != protect_settings().to_dict()  # the default (mid) shapes differently
    assert {entry["strength"] for entry in manifest["files"].values()} == {"high"}
    assert sorted(archive.namelist()) == ["manifest.json", "me/john1.jpg", "me/john2.jpg"]
