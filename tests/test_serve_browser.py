"""The page in a real browser: a ``faceguard serve`` process, headless Chromium (Debian's
``chromium``, driven by Playwright's Python package), two real photos of one person uploaded
through the page's ``<input type="file">``, the results waited for, the before/after view flipped
and slid, one photo and the zip downloaded, and a screenshot saved (pytest's tmp folder).

Without chromium (or Playwright) the test skips with the reason, except under CI (``CI=true``),
where that is a failure: ``.ci/run`` installs chromium.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import IN_CI
from test_protect_support import require_data

PHOTOS = ("kit_harington/john1.jpg", "kit_harington/john2.jpg")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
START_SECONDS = 240  # the server answers once its worker has loaded the models


def _chromium() -> str:
    """Path of the chromium executable; skip (fail in CI) when it or Playwright is missing."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "Playwright's Python package is not installed (pip install playwright)"
    if found is None:
        problem = "no chromium executable (Debian: apt-get install -y chromium; or set CHROMIUM)"
    if problem:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def server(tmp_path, dlib_cache):
    """A ``faceguard serve`` process on a free port (2 crafting steps, one worker); yields its URL."""
    port, log = _free_port(), (tmp_path / "serve.log").open("w")
    env = {**os.environ, "FACEGUARD_CACHE": str(dlib_cache), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "faceguard.cli", "serve", "--port", str(port), "--steps", "2"],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                    assert json.load(response) == {"status": "ok"}
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"faceguard serve did not start: {(tmp_path / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    left = [p for p in tmp_path.glob("faceguard-serve-*")]
    assert left == [], f"the server left its temporary folder behind: {left}"


def test_the_page_protects_shows_and_downloads_real_photos(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    chromium = _chromium()
    paths = [str(require_data("photos") / rel) for rel in PHOTOS]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1400})
            page = context.new_page()
            page.goto(server + "/")
            expect(page.locator("#eps")).to_have_value("16")  # the CLI's default, from /api/options
            expect(page.locator("#method")).to_have_value("evade")
            expect(page.locator("#strength")).to_have_value("mid")
            expect(page.locator("#strength-help")).to_contain_text("--eps stays the cap")
            page.select_option("#method", "adversarial")
            expect(page.locator("#strength")).to_be_disabled()  # only evasion is shaped by strength
            page.select_option("#method", "evade")
            page.select_option("#strength", "high")
            expect(page.locator("#caveat")).to_contain_text("passing this check against one known model")
            page.set_input_files("#files", paths)
            page.click("#start")
            cards = page.locator("li.photo")
            expect(cards).to_have_count(2, timeout=30_000)
            try:
                expect(page.locator("li.photo.protected")).to_have_count(2, timeout=180_000)
            except AssertionError as waited:  # say what each card shows and what the server logged
                shown = " | ".join(cards.all_inner_texts())
                log = (tmp_path / "serve.log").read_text()[-3000:]
                raise AssertionError(f"{waited}\ncards: {shown}\nserver log:\n{log}") from None
            # the cards keep the order the photos were chosen in, whichever upload was answered first
            names = [Path(card.get_attribute("data-name")).name for card in cards.all()]
            assert names == [Path(rel).name for rel in PHOTOS]
            first = page.locator("li.photo.protected").first
            expect(first.locator(".check")).to_contain_text("dlib-resnet", timeout=120_000)
            after = first.locator("img.after")
            expect(after).to_have_js_property("complete", True)
            width = after.evaluate("img => img.naturalWidth")
            name = first.get_attribute("data-name")
            source = paths[0]
            assert width == Image.open(source).width  # the protected photo at full resolution
            first.locator(".full").check()
            assert first.locator("img.before").evaluate("img => img.getBoundingClientRect().width") == width
            assert first.get_attribute("data-showing") == "after"
            first.locator(".flip").click()
            assert first.get_attribute("data-showing") == "before"
            assert "inset(0px 0px 0px 100%)" in after.evaluate("img => getComputedStyle(img).clipPath")
            first.locator(".flip").click()
            assert first.get_attribute("data-showing") == "after"
            first.locator(".split").fill("50")
            assert first.get_attribute("data-showing") == "split"
            assert first.locator(".numbers").inner_text().count("\n") >= 6
            page.screenshot(path=str(tmp_path / "serve-page.png"), full_page=True)
            with page.expect_download() as one:
                first.locator("a.download").click()
            single = Path(one.value.path()).read_bytes()
            assert one.value.suggested_filename == Path(name).name
            assert Image.open(io.BytesIO(single)).format == "JPEG"
            assert single != Path(source).read_bytes()
            with page.expect_download() as everything:
                page.click("#download-all")
            archive = zipfile.ZipFile(everything.value.path())
            assert sorted(archive.namelist()) == ["john1.jpg", "john2.jpg", "manifest.json"]
            manifest = json.loads(archive.read("manifest.json"))
            assert {entry["status"] for entry in manifest["files"].values()} == {"protected"}
            assert manifest["check"]["model"] == "dlib-resnet"
            assert {entry["strength"] for entry in manifest["files"].values()} == {"high"}
            expect(page.locator("#download-note")).to_contain_text("removed its copies")
        finally:
            browser.close()
