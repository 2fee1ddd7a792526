"""``faceguard serve``'s HTTP behaviour: every route and every hostile case of issue 33.

The worker runs the real per-photo path of ``faceguard protect`` (``_protect_one``: decoding, format
and alpha rules, atomic writes, metrics) with a tiny stand-in protector that marks the top-left
corner of any non-uniform image as its face, so these tests are about HTTP, limits and files, and
take seconds. tests/test_serve_real.py protects a real photo with the real models.
"""
from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from faceguard.serve.app import RECORD_HEADER, ServeConfig, create_app
from faceguard.serve.engine import Engine
from faceguard.serve.uploads import Limits, safe_name, unique_name
from test_protect_support import gradient_image, huge_png


class TinyProtector:
    """Detects one 'face' (the top-left 8x8 corner) in any non-uniform image and flips its lowest bit."""

    def __init__(self, eps: float, delay: float = 0.0) -> None:
        self.eps, self.delay = eps, delay

    def detect(self, pixels):
        from recognition.detection import Face

        if pixels.min() == pixels.max():
            return []
        return [Face(np.array([0, 0, 8, 8], np.float32), 0.99, np.zeros((5, 2), np.float32))]

    def protect_pixels(self, pixels, faces, names):
        from faceguard.protect.protector import Crafted, FaceResult

        time.sleep(self.delay)
        out = pixels.copy()
        out[:8, :8] ^= 1
        return Crafted(out, [FaceResult([0, 0, 8, 8], 0.99, "", 1.0, 0.5) for _ in faces])

    def measure_saved(self, crafted, saved, faces):
        for face in crafted.faces:
            face.loss_saved = 0.5


class TinyEngine(Engine):
    """:class:`Engine` with :class:`TinyProtector` and a stand-in check (no model is loaded)."""

    delay = 0.0

    def __init__(self) -> None:
        self.changes, self.calls = {}, []

    def protector(self, method, eps, strength="mid"):
        self.calls.append((method, eps, strength))
        return TinyProtector(eps, self.delay)

    def settings(self, method, eps, strength="mid"):
        return {"crafting": {"method": method, "eps": eps}, "identities": "folders"}

    def check(self, originals, protected, identities):
        rels = sorted(p.relative_to(originals).as_posix() for p in Path(originals).rglob("*") if p.is_file())
        return {"model": "stand-in", "threshold": 0.6, "photos": [{"rel": rel, "status": "evades"} for rel in rels]}


class SlowEngine(TinyEngine):
    delay = 1.0


class CrashEngine(TinyEngine):
    """Kills its worker process on a photo named crash.png (as the out-of-memory killer would)."""

    def protect_file(self, source, target, method, eps, strength="mid"):
        if Path(source).name == "crash.png":
            import os

            os._exit(1)
        return super().protect_file(source, target, method, eps, strength)


def _png(image: Image.Image | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    (image or gradient_image(64)).save(buffer, format=fmt)
    return buffer.getvalue()


def _cli_help(dest: str) -> str:
    """The help of ``faceguard protect``'s option ``dest``, as ``--help`` prints it."""
    import argparse

    from faceguard.commands import protect

    parser = argparse.ArgumentParser()
    protect.add_arguments(parser)
    return next(action.help for action in parser._actions if action.dest == dest)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


@pytest.fixture()
def serve(tmp_path):
    """A running app (TestClient) with the tiny engine in one thread; yields (client, app, parent)."""
    def start(factory=TinyEngine, workers=0, **limits):
        config = ServeConfig(workers=workers, threads=1, factory=factory, limits=Limits(**limits),
                             temp_parent=tmp_path / "tmp")
        (tmp_path / "tmp").mkdir(exist_ok=True)
        app = create_app(config)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        started.append(client)
        return client, app
    started = []
    yield start
    for client in started:
        client.__exit__(None, None, None)
    assert _files(tmp_path / "tmp") == [], "the server left files behind"


def test_health_options_and_page(serve):
    from faceguard.settings import protect_settings

    client, _ = serve()
    assert client.get("/api/health").json() == {"status": "ok"}
    options = client.get("/api/options").json()
    assert options["eps"]["default"] == protect_settings().eps == 16
    assert "pixel levels" in options["eps"]["help"] and options["eps"]["help"] == _cli_help("eps")
    assert options["method"]["default"] == "evade" and "target" in options["method"]["not_served"]
    assert "crafting method (default: evade" in options["method"]["help"] == _cli_help("method")
    assert options["strength"]["default"] == "mid" and options["strength"]["choices"] == ["high", "mid", "low"]
    assert options["strength"]["help"] == _cli_help("strength") and options["strength"]["methods"] == ["evade"]
    assert options["check"]["caveat"].startswith("passing this check against one known model (dlib-resnet)")
    page = client.get("/").text
    assert '<input type="file"' in page and "webkitdirectory" in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    assert client.get("/page/page.js").headers["content-type"].startswith("text/javascript")
    assert "https://" not in client.get("/page/page.js").text
    assert client.get("/page/page.css").status_code == 200
    missing = client.get("/page/../app.py")
    assert missing.status_code == 404 and "error" in missing.json()
    assert client.get("/no/such/route").json() == {"error": "Not Found"}


def test_protect_returns_the_photo_in_its_own_format_and_the_record(serve):
    client, _ = serve()
    for fmt, mode, media in (("PNG", "RGBA", "image/png"), ("JPEG", "RGB", "image/jpeg"), ("WEBP", "RGB", "image/webp"), ("TIFF", "L", "image/tiff")):
        sent = _png(gradient_image(64).convert(mode), fmt)
        image = Image.open(io.BytesIO(sent))
        response = client.post("/api/protect", files={"photo": (f"me.{fmt.lower()}", sent)},
                               data={"eps": "8", "method": "alignment"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == media
        out = Image.open(io.BytesIO(response.content))
        assert (out.format, out.mode, out.size) == (fmt, mode, (64, 64))
        record = json.loads(response.headers[RECORD_HEADER])
        assert record["status"] == "protected" and record["faces"] == 1 and record["eps"] == 8
        assert record["format"] == fmt and record["lossy"] == (fmt == "JPEG") and record["method"] == "alignment"
        assert record["strength"] == "mid"  # the CLI's default
        if fmt != "JPEG":
            assert record["linf"] == 1 and np.array_equal(np.asarray(out)[8:], np.asarray(image)[8:])


@pytest.mark.parametrize("name, body, status, words", [
    ("notes.jpg", b"this is not a photo\n", 415, "not a readable"),
    ("notes.txt", _png(), 415, "not a JPEG, PNG"),
    ("empty.png", b"", 400, "empty"),
    ("truncated.png", _png(gradient_image(256))[:600], 422, "truncated"),
    ("plain.png", _png(Image.new("RGB", (64, 64), (90, 90, 90))), 422, "no face detected"),
])
def test_protect_refuses_bad_photos_with_one_clear_line(serve, name, body, status, words):
    client, _ = serve()
    response = client.post("/api/protect", files={"photo": (name, body)})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error.startswith(name) and words in error and "Traceback" not in error and "\n" not in error
    assert client.get("/api/health").status_code == 200


def test_limits_bytes_megapixels_and_bombs(serve, tmp_path):
    client, _ = serve(max_bytes=20_000, max_megapixels=1.0)
    big = client.post("/api/protect", files={"photo": ("big.png", np.random.default_rng(0).bytes(30_000))})
    assert big.status_code == 413 and "over this server's limit of 20000 bytes" in big.json()["error"]
    wide = client.post("/api/protect", files={"photo": ("wide.png", huge_png(tmp_path / "w.png", 2000).read_bytes())})
    assert wide.status_code == 413 and "2000 x 2000 pixels (4.0 megapixels)" in wide.json()["error"]
    bomb = client.post("/api/protect", files={"photo": ("bomb.png", huge_png(tmp_path / "b.png").read_bytes())})
    assert bomb.status_code == 413 and "decompression bomb" in bomb.json()["error"]


def test_bad_options_and_bodies(serve):
    client, _ = serve()
    photo = {"photo": ("me.png", _png())}
    for data, words in (({"eps": "0.03"}, "looks like a fraction"), ({"eps": "abc"}, "eps"),
                        ({"eps": "0"}, "at least 1"), ({"method": "target"}, "not served"),
                        ({"identities": "cluster"}, "identities"), ({"strength": "max"}, "strength must be one of")):
        response = client.post("/api/protect", files=photo, data=data)
        assert response.status_code == 422 and words in response.json()["error"], (data, response.text)
    assert client.post("/api/protect", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    two = client.post("/api/protect", files=[("photo", ("a.png", _png())), ("photo", ("b.png", _png()))])
    assert two.status_code == 400 and "exactly one photo" in two.json()["error"]
    broken = client.post("/api/protect", content=b"--xx\r\nnonsense",
                         headers={"content-type": "multipart/form-data; boundary=zz"})
    assert broken.status_code in (400, 415) and "error" in broken.json()


def test_names_are_made_safe(serve, tmp_path):
    assert safe_name("../../etc/passwd.png") == "etc/passwd.png"
    assert safe_name("/abs/..\\..\\x.jpg") == "abs/x.jpg"
    assert safe_name("..") == safe_name("") == safe_name(None) == "photo"
    assert safe_name(".hidden\x00\n.png") == "hidden.png"
    assert safe_name("café 😀.JPG") == "café 😀.JPG"
    assert len(safe_name("a" * 500 + ".png")) == 120
    taken: set[str] = set()
    assert [unique_name(n, taken) for n in ("a.png", "A.png", "a.png")] == ["a.png", "A (2).png", "a (3).png"]
    client, app = serve()
    for name, kept in (("../../../evil.png", "evil.png"), ("c:\\x\\..\\odd\u202e name.png", "odd name.png"),
                       ("café 😀.png", "café 😀.png")):
        response = client.post("/api/protect", files={"photo": (name, _png())})
        assert response.status_code == 200, response.text
        assert json.loads(response.headers[RECORD_HEADER])["output"] == kept
    outside = [p for p in _files(tmp_path) if not p.is_relative_to(app.state.root)]
    assert outside == [] and not (tmp_path.parent / "evil.png").exists()


def test_twenty_uploads_at_once(serve):
    client, app = serve()
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda k: client.post("/api/protect", files={"photo": (f"p{k}.png", _png())}),
                                  range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert app.state.store.jobs == {} and _files(app.state.root) == []


def test_job_api_progress_results_check_and_zip(serve):
    client, app = serve()
    files = [("photo", (f"trip/p{k}.png", _png())) for k in range(3)]
    files += [("photo", ("trip/p0.png", _png())), ("photo", ("plain.png", _png(Image.new("L", (32, 32)))))]
    files += [("photo", ("notes.jpg", b"not a photo"))]
    created = client.post("/api/jobs", files=files, data={"eps": "12", "method": "adversarial", "strength": "low"})
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["method"], job["eps"], job["strength"], job["identities"]) == ("adversarial", 12, "low", "single")
    names = [p["name"] for p in job["photos"]]
    assert names == ["trip/p0.png", "trip/p1.png", "trip/p2.png", "trip/p0 (2).png", "plain.png", "notes.jpg"]
    assert job["photos"][-1]["status"] == "error" and "not a readable" in job["photos"][-1]["reason"]
    more = client.post(f"/api/jobs/{job['id']}/photos", files={"photo": ("late.png", _png())})
    assert more.status_code == 200 and more.json()["photos"][0]["index"] == 6
    refused = client.post(f"/api/jobs/{job['id']}/photos", files={"photo": ("late.gif", b"GIF89a")})
    assert refused.status_code == 415
    for _ in range(100):
        job = client.get(f"/api/jobs/{job['id']}").json()
        if job["done"]:
            break
        time.sleep(0.05)
    assert job["counts"] == {"queued": 0, "protecting": 0, "protected": 5, "no_face": 1, "error": 2}
    assert job["photos"][4]["record"]["status"] == "no_face"
    assert job["photos"][0]["record"]["strength"] == "low"  # the job's strength reached the worker
    base = f"/api/jobs/{job['id']}/photos"
    original, protected = client.get(f"{base}/0/original"), client.get(f"{base}/0/protected?download=1")
    assert original.content == _png() and protected.headers["content-type"] == "image/png"
    assert protected.headers["content-disposition"].startswith("attachment;")
    assert client.get(f"{base}/5/protected").status_code == 404 and client.get(f"{base}/99/original").status_code == 404
    checked = client.post(f"/api/jobs/{job['id']}/check").json()
    assert checked["check_status"] == "done" and checked["check"]["photos"][0]["status"] == "evades"
    zipped = client.get(f"/api/jobs/{job['id']}/download")
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert sorted(archive.namelist()) == sorted(["manifest.json", "plain.png", "late.png", "trip/p0.png",
                                                  "trip/p0 (2).png", "trip/p1.png", "trip/p2.png"])
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["settings"]["crafting"]["eps"] == 12 and manifest["settings"]["identities"] == "single"
    assert manifest["files"]["notes.jpg"]["status"] == "error" and "settings" not in manifest["files"]["late.png"]
    assert manifest["check"]["model"] == "stand-in"
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404  # downloaded: removed
    assert _files(app.state.root) == []


def test_jobs_expire_and_can_be_deleted(serve):
    client, app = serve(job_ttl=0.3)
    job = client.post("/api/jobs", files={"photo": ("a.png", _png())}).json()
    assert client.post("/api/jobs").status_code == 201  # no body: the defaults
    time.sleep(1.0)
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404 and app.state.store.jobs == {}
    assert _files(app.state.root) == []
    other = client.post("/api/jobs", data={"eps": "4"}).json()
    assert client.delete(f"/api/jobs/{other['id']}").json() == {"deleted": other["id"]}
    assert client.delete(f"/api/jobs/{other['id']}").status_code == 404


def test_a_busy_server_refuses_with_503_and_keeps_serving(serve):
    client, _ = serve(factory=SlowEngine, max_queue=1)
    job = client.post("/api/jobs", files=[("photo", ("a.png", _png())), ("photo", ("b.png", _png()))]).json()
    assert [p["status"] for p in job["photos"]][1] == "error" and "busy" in job["photos"][1]["reason"]
    busy = client.post("/api/protect", files={"photo": ("c.png", _png())})
    assert busy.status_code == 503 and "try again later" in busy.json()["error"]
    assert client.get("/api/health").status_code == 200


def _raw_request(client: TestClient, path: str, body: bytes, boundary: str, chunks: int, then_wait: float = 0.0):
    """Call the app directly: send the first ``chunks`` of ``body`` (of 4), then disconnect (after
    ``then_wait`` seconds); returns the response status sent, if any."""
    sent: list[dict] = []
    parts = [body[k * len(body) // 4:(k + 1) * len(body) // 4] for k in range(4)][:chunks]

    async def call() -> None:
        queue = [{"type": "http.request", "body": part, "more_body": k < 3} for k, part in enumerate(parts)]

        async def receive() -> dict:
            if queue:
                return queue.pop(0)
            await asyncio.sleep(then_wait)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
                 "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
        await client.app(scope, receive, send)

    client.portal.call(call)
    return next((m["status"] for m in sent if m["type"] == "http.response.start"), None)


def _multipart(name: str, data: bytes, boundary: str = "b0undary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


class _ChunkedRequest:
    """A Starlette-like request whose multipart body arrives in small chunks, yielding between them."""

    def __init__(self, body: bytes, boundary: str) -> None:
        self.body, self.headers = body, {"content-type": f"multipart/form-data; boundary={boundary}"}

    async def stream(self):
        for start in range(0, len(self.body), 512):
            await asyncio.sleep(0)  # let the other upload run: their parts are written interleaved
            yield self.body[start:start + 512]


def test_uploads_into_one_folder_at_once_keep_their_own_bytes(tmp_path):
    """The page sends a job's photos as several requests at once, into one job folder: each
    upload must land in a file of its own (the bug: both wrote ``.upload-0.part``)."""
    from faceguard.serve.uploads import read_form

    photos = [_png(gradient_image(size)) for size in (64, 96, 128)]
    requests = [_ChunkedRequest(_multipart(f"p{k}.png", data), "b0undary") for k, data in enumerate(photos)]

    async def read_all():
        return await asyncio.gather(*(read_form(request, tmp_path, Limits()) for request in requests))

    forms = asyncio.run(read_all())
    uploads = [form.files[0] for form in forms]
    assert len({upload.path for upload in uploads}) == 3
    assert [upload.path.read_bytes() for upload in uploads] == photos
    assert [upload.size for upload in uploads] == [len(data) for data in photos]


def test_client_disconnects_mid_upload_and_mid_job(serve):
    client, app = serve(factory=SlowEngine)
    body = _multipart("me.png", _png(gradient_image(200)))
    _raw_request(client, "/api/protect", body, "b0undary", chunks=2)  # gone halfway through the upload
    assert app.state.store.jobs == {} and _files(app.state.root) == []
    _raw_request(client, "/api/protect", body, "b0undary", chunks=4, then_wait=0.3)  # gone while it is protected
    assert app.state.store.jobs == {}
    time.sleep(1.2)  # the photo in the worker finishes, and its output is removed
    assert _files(app.state.root) == []
    assert client.post("/api/protect", files={"photo": ("me.png", _png())}).status_code == 200


def test_a_worker_process_that_dies_fails_only_its_photo(serve):
    client, _ = serve(factory=CrashEngine, workers=1)
    crashed = client.post("/api/protect", files={"photo": ("crash.png", _png())})
    assert crashed.status_code == 422 and "the worker failed" in crashed.json()["error"]
    for _ in range(2):  # the pool is started again
        assert client.post("/api/protect", files={"photo": ("me.png", _png())}).status_code == 200


def test_serve_command_warns_off_loopback(monkeypatch, capsys):
    import uvicorn

    from faceguard.cli import main
    from faceguard.commands.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.append(kwargs))
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123", "--steps", "2"]) == 0
    assert seen == [{"host": "0.0.0.0", "port": 8123, "log_level": "warning"}]
    assert "warning: listening on 0.0.0.0: anyone who can reach" in capsys.readouterr().err
    assert main(["serve"]) == 0 and "warning" not in capsys.readouterr().err
