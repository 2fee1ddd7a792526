"""Hostile and odd inputs: each bad file costs one line and the run goes on; odd but valid photos
(grayscale, palette with transparency, EXIF-rotated, no face) are handled; a killed run resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from test_protect_support import (build_tiny_profile, copy_photos, gradient_image, huge_png,  # noqa: F401
                                  one_thread, require_data)

FACE = "kit_harington/john2.jpg"  # 630x374, one face


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    return build_tiny_profile(tmp_path_factory.mktemp("profile"))


def _hostile_folder(root):
    """A folder with one file of every kind the issue lists, plus one ordinary photo."""
    face = Image.open(require_data("photos") / FACE)
    good = copy_photos(root, [FACE])
    odd = root / "odd"
    odd.mkdir()
    (odd / "zero.jpg").write_bytes(b"")
    data = (good / FACE).read_bytes()
    (odd / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (odd / "text.JPG").write_text("this is not a photo\n")
    face.convert("CMYK").save(odd / "cmyk.jpg")
    Image.fromarray((np.asarray(face.convert("L"), np.uint16) * 257)).save(odd / "deep16.png")
    face.convert("L").save(odd / "gray.PNG")
    palette = face.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    palette.save(odd / "palette.png", transparency=0)
    huge_png(odd / "huge.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    face.transpose(Image.Transpose.ROTATE_90).save(odd / "rotated.jpg", exif=exif, quality=95)
    gradient_image().save(odd / "noface.webp", lossless=True)
    outside = root.parent / "outside.jpg"
    outside.write_bytes(data)
    (odd / "link.jpg").symlink_to(outside)
    return root


def test_hostile_inputs_one_line_each_and_the_run_goes_on(tmp_path, profile_path, capsys):
    from faceguard.cli import main

    src = _hostile_folder(tmp_path / "photos")
    out = tmp_path / "out"
    code = main(["protect", str(src), "--method", "alignment", "--out", str(out), "--profile", str(profile_path),
                 "--steps", "1",
                 "--device", "cpu", "--quiet"])
    assert code == 1  # some files could not be handled
    files = json.loads((out / "manifest.json").read_text())["files"]
    status = {rel: entry["status"] for rel, entry in files.items()}
    errors = {"odd/zero.jpg", "odd/truncated.jpg", "odd/text.JPG", "odd/cmyk.jpg", "odd/deep16.png",
              "odd/huge.png", "odd/link.jpg"}
    assert {rel for rel, s in status.items() if s == "error"} == errors
    assert status[FACE] == status["odd/gray.PNG"] == status["odd/palette.png"] == "protected"
    assert status["odd/rotated.jpg"] == "protected" and status["odd/noface.webp"] == "no_face"
    stderr = capsys.readouterr().err.splitlines()
    for rel in errors:  # exactly one line naming the file and the reason
        lines = [line for line in stderr if rel.split("/")[1] in line]
        assert len(lines) == 1 and files[rel]["reason"] in lines[0], (rel, lines)
    assert "CMYK" in files["odd/cmyk.jpg"]["reason"] and "16-bit" in files["odd/deep16.png"]["reason"]
    assert "decompression bomb" in files["odd/huge.png"]["reason"].lower()
    assert "outside" in files["odd/link.jpg"]["reason"] and not (out / "odd" / "link.jpg").exists()

    gray = Image.open(out / "odd" / "gray.PNG")
    assert gray.mode == "L"
    assert 0 < np.abs(np.asarray(gray, int) - np.asarray(Image.open(src / "odd" / "gray.PNG"), int)).max() <= 16
    palette = Image.open(out / "odd" / "palette.png")
    original = np.asarray(Image.open(src / "odd" / "palette.png").convert("RGBA"), int)
    assert palette.mode == "RGBA"
    assert np.array_equal(np.asarray(palette)[..., 3], original[..., 3])  # alpha kept
    assert np.abs(np.asarray(palette, int) - original).max() <= 16
    rotated = Image.open(out / "odd" / "rotated.jpg")
    assert rotated.size == (630, 374) and rotated.getexif().get(0x0112, 1) == 1  # stored upright
    assert (out / "odd" / "noface.webp").read_bytes() == (src / "odd" / "noface.webp").read_bytes()


def test_killed_run_resumes_without_broken_outputs(tmp_path, profile_path):
    from faceguard.cli import main
    from faceguard.protect.manifest import read_manifest

    src = tmp_path / "photos"
    for k in range(4):
        copy_photos(tmp_path / f"copy{k}", [FACE])
        (src / "kit").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"copy{k}" / FACE).rename(src / "kit" / f"photo{k}.jpg")
    out = tmp_path / "out"
    command = [sys.executable, "-c", "import sys; from faceguard.cli import main; sys.exit(main())",
               "protect", str(src), "--method", "alignment", "--out", str(out), "--profile", str(profile_path),
               "--steps", "3",
               "--format", "png", "--device", "cpu", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.is_file() and len(read_manifest(out)["files"]) >= 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(read_manifest(out)["files"])
    assert 1 <= done < 4, "the kill should land mid-run"

    assert main(["protect", str(src), "--method", "alignment", "--out", str(out), "--profile", str(profile_path),
                 "--steps", "3",
                 "--format", "png", "--device", "cpu", "--quiet"]) == 0
    files = json.loads(manifest.read_text())["files"]
    assert sorted(files) == [f"kit/photo{k}.jpg" for k in range(4)]
    assert all(entry["status"] == "protected" for entry in files.values())
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["kit/photo0.png", "kit/photo1.png", "kit/photo2.png", "kit/photo3.png", "manifest.json"]
    assert main(["verify", str(src), str(out), "--eps", "16"]) == 0  # every output decodes, bound holds
