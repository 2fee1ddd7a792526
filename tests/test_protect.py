"""faceguard protect on real photos: faces perturbed, bound after saving, untouched background,
complete manifest, idempotent reruns, kept formats and metadata, the Python API, and verify."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from test_protect_support import build_tiny_profile, copy_photos, one_thread  # noqa: F401 (autouse)

MANIFEST_KEYS = {"input", "output", "status", "reason", "input_sha256", "output_sha256", "faces", "eps",
                 "linf", "psnr", "ssim", "loss", "format", "lossy", "face_details", "seconds"}


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    return build_tiny_profile(tmp_path_factory.mktemp("profile"))


@pytest.fixture(scope="module")
def protector(profile_path):
    from faceguard.protect.protector import Protector

    return Protector(profile_path, method="alignment", eps=16, steps=2, device="cpu")


@pytest.fixture(scope="module")
def png_run(tmp_path_factory, profile_path):
    """The bundle photos protected to PNG through the CLI."""
    from faceguard.cli import main

    src = copy_photos(tmp_path_factory.mktemp("in") / "photos")
    out = src.parent / "out"
    code = main(["protect", str(src), "--method", "alignment", "--out", str(out), "--profile", str(profile_path),
                 "--steps", "2",
                 "--format", "png", "--device", "cpu", "--quiet", "--report"])
    return src, out, code


def test_png_run_perturbs_every_face_within_the_bound_and_nowhere_else(png_run, protector):
    from faceguard.protect.warp import face_region

    src, out, code = png_run
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["files"]) == 3
    for rel, entry in manifest["files"].items():
        assert MANIFEST_KEYS <= set(entry), rel
        assert entry["status"] == "protected" and entry["output"] == rel[:-4] + ".png"
        original = np.asarray(Image.open(src / rel).convert("RGB")).astype(int)
        saved = np.asarray(Image.open(out / entry["output"])).astype(int)
        assert saved.shape == original.shape
        diff = np.abs(saved - original).max(axis=2)
        assert diff.max() <= 16 and entry["linf"] == diff.max() and entry["eps"] == 16
        faces = protector.detect(original.astype(np.uint8))
        assert len(faces) == entry["faces"] >= 1
        inside = np.zeros(diff.shape, dtype=bool)
        for face in faces:
            region = face_region(original.astype(np.uint8), face.landmarks, protector.profile.input_size)
            x0, y0, x1, y1 = region.box
            inside[y0:y1, x0:x1] |= region.mask
            changed = diff[y0:y1, x0:x1][region.mask]
            assert (changed > 0).mean() > 0.3, f"{rel}: face at {face.box} barely perturbed"
        assert not diff[~inside].any(), f"{rel}: pixels outside the face regions changed"
        assert all(entry["loss"][k] is not None for k in ("clean", "crafted", "saved"))
        seen = entry["visibility"]  # the most visible face's record, and the whole photo's numbers
        assert seen == max((d["visibility"] for d in entry["face_details"]), key=lambda r: r["flip"]) | {
            "photo_flip": seen["photo_flip"], "photo_ciede2000": seen["photo_ciede2000"]}
        assert 0 < seen["photo_flip"] <= seen["flip"] and seen["ratio_jpeg75"] == pytest.approx(
            seen["flip"] / seen["flip_jpeg75"], rel=1e-2)
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "FLIP error map, face 1" in page
    assert page.count("compare at 100 %") == 1 + 3  # the explanation, then one button per photo


def test_rerun_does_nothing(png_run, profile_path, capsys):
    from faceguard.cli import main

    src, out, _ = png_run
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.png")}
    code = main(["protect", str(src), "--method", "alignment", "--out", str(out), "--profile", str(profile_path),
                 "--steps", "2",
                 "--format", "png", "--device", "cpu", "--quiet"])
    assert code == 0
    assert "0 protected, 0 no face, 0 error, 3 skipped" in capsys.readouterr().out
    assert before == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.png")}


def test_verify_accepts_the_run_and_catches_a_violation(png_run, tmp_path):
    import shutil

    from faceguard.cli import main

    src, out, _ = png_run
    assert main(["verify", str(src), str(out), "--eps", "16"]) == 0
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    target = broken / "obama" / "obama2.png"
    pixels = np.asarray(Image.open(target)).copy()
    pixels[5, 5] = (pixels[5, 5].astype(int) + 40).clip(0, 255) if pixels[5, 5, 0] < 128 else pixels[5, 5] - 40
    Image.fromarray(pixels).save(target)
    assert main(["verify", str(src), str(broken), "--eps", "16"]) == 1


def test_jpeg_stays_jpeg_with_its_metadata(tmp_path, profile_path):
    from faceguard.cli import main

    src = copy_photos(tmp_path / "in", ["kit_harington/john2.jpg"])
    photo = src / "kit_harington" / "john2.jpg"
    image = Image.open(photo)
    exif = image.getexif()
    exif[0x013B] = "faceguard test"  # Artist
    icc = b"\0" * 128  # any bytes: the ICC profile is carried over, not interpreted
    image.save(photo, quality=90, exif=exif, icc_profile=icc)
    out = tmp_path / "out"
    assert main(["protect", str(src), "--method", "alignment", "--out", str(out), "--profile", str(profile_path),
                 "--steps", "2",
                 "--device", "cpu", "--quiet"]) == 0
    saved = Image.open(out / "kit_harington" / "john2.jpg")
    original = Image.open(photo)
    assert saved.format == "JPEG" and saved.size == original.size
    assert saved.getexif()[0x013B] == "faceguard test" and saved.info["icc_profile"] == icc
    assert saved.quantization == original.quantization
    entry = json.loads((out / "manifest.json").read_text())["files"]["kit_harington/john2.jpg"]
    assert entry["lossy"] and entry["format"] == "JPEG"
    assert entry["linf"] == int(np.abs(np.asarray(saved, int) - np.asarray(original, int)).max())


def test_api_protects_one_photo(protector):
    from test_protect_support import PHOTOS, require_data

    image = Image.open(require_data("photos") / PHOTOS[2])
    result = protector.protect(image)
    assert isinstance(result.image, Image.Image) and result.image.size == image.size
    assert result.image.mode == image.mode and len(result.faces) == 2
    diff = np.abs(np.asarray(result.image, int) - np.asarray(image, int))
    assert 0 < diff.max() <= 16
    for face in result.faces:
        assert face.loss_saved is not None and np.isfinite([face.loss_clean, face.loss_crafted]).all()
    as_array = protector.protect(np.asarray(image))
    assert np.array_equal(as_array.image, np.asarray(result.image))  # same seed, same result


def test_cluster_mode_groups_faces(tmp_path, profile_path, capsys):
    from faceguard.cli import main

    src = copy_photos(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["protect", str(src), "--method", "alignment", "--out", str(out), "--profile", str(profile_path),
                 "--steps", "0",
                 "--identities", "cluster", "--format", "png", "--device", "cpu", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    faces = sum(e["faces"] for e in manifest["files"].values())
    assert faces == 4 and 1 <= len(manifest["clusters"]) <= faces
    assert set(manifest["centres"]) == set(manifest["clusters"])
    assert "person-01" in capsys.readouterr().out
