"""``python -m recognition align``: a temporary photo tree with real photos, broken files and a
face-less image; report statuses, exit codes, output layout, and the landmark-list path.

The command is driven through its own ``add_arguments``/``run`` pair (what the dispatcher calls),
on two small real photos to keep MTCNN on CPU quick.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_data
from recognition import align_cli
from recognition.alignment import ARCFACE_TEMPLATE, CELEBA_COLUMNS, align_face
from recognition.files import load_rgb

SINGLE = "kit_harington/john2.jpg"  # 630x374, one face
GROUP = "group/kit_with_rose.jpg"  # 501x700, two faces


def align(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser()
    align_cli.add_arguments(parser)
    return align_cli.run(parser.parse_args([str(arg) for arg in argv]))


def digests(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def report_of(dst: Path) -> dict:
    return json.loads((dst / align_cli.REPORT_NAME).read_text())


@pytest.fixture()
def tree(tmp_path) -> Path:
    """SRC with two real photos in identity folders, two broken .jpg files, a flat grey PNG."""
    photos = require_data("photos")
    src = tmp_path / "src"
    for rel in (SINGLE, GROUP):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photos / rel, src / rel)
    (src / "broken").mkdir()
    (src / "broken" / "empty.jpg").write_bytes(b"")
    (src / "broken" / "notes.jpg").write_text("not an image\n")
    (src / "broken" / "readme.txt").write_text("ignored: not an image extension\n")
    Image.new("RGB", (320, 240), (128, 128, 128)).save(src / "grey.PNG")
    return src


def test_align_tree_reports_every_file(tree, tmp_path, capsys):
    before = digests(tree)
    dst = tmp_path / "dst"
    assert align(tree, dst) == 1  # two broken files
    out, err = capsys.readouterr()

    files = report_of(dst)["files"]
    assert {rel: entry["status"] for rel, entry in files.items()} == {
        SINGLE: "aligned", GROUP: "several_faces", "grey.PNG": "no_face",
        "broken/empty.jpg": "error", "broken/notes.jpg": "error"}
    assert files["grey.PNG"]["reason"] == "no face detected"
    assert files[GROUP]["faces"] == 2 and files[GROUP]["outputs"] == ["group/kit_with_rose.png"]
    assert "cannot identify image file" in files["broken/notes.jpg"]["reason"]
    assert report_of(dst)["counts"] == {"aligned": 1, "several_faces": 1, "no_face": 1, "error": 2}

    error_lines = err.strip().splitlines()
    assert len(error_lines) == 2
    assert all("broken" in line and "cannot identify image file" in line for line in error_lines)
    assert "1 aligned, 1 several_faces, 1 no_face, 2 error" in out

    written = sorted(path.relative_to(dst).as_posix() for path in dst.rglob("*") if path.is_file())
    assert written == [align_cli.REPORT_NAME, "group/kit_with_rose.png", "kit_harington/john2.png"]
    crop = np.asarray(Image.open(dst / "kit_harington" / "john2.png"))
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert digests(tree) == before, "originals must not change"


def test_multi_face_modes_and_clean_exit(tree, tmp_path):
    shutil.rmtree(tree / "broken")
    dst = tmp_path / "all"
    assert align(tree, dst, "--multi", "all", "--size", "96") == 0  # no_face is not an error
    files = report_of(dst)["files"]
    assert files[GROUP]["outputs"] == ["group/kit_with_rose_face0.png", "group/kit_with_rose_face1.png"]
    assert files[SINGLE]["outputs"] == ["kit_harington/john2_face0.png"]
    for name in files[GROUP]["outputs"] + files[SINGLE]["outputs"]:
        assert Image.open(dst / name).size == (96, 96)

    dst = tmp_path / "skip"
    assert align(tree, dst, "--multi", "skip") == 0
    files = report_of(dst)["files"]
    assert files[GROUP]["status"] == "several_faces" and files[GROUP]["outputs"] == []
    assert not (dst / "group").exists()
    assert files[SINGLE]["status"] == "aligned"


def test_landmark_list_replaces_detection(tmp_path):
    """A CelebA-style list names bare files (CelebA's layout is flat); files in sub-folders match
    by name. The crop written must be exactly align_face with the listed landmarks."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
    landmarks = np.rint(ARCFACE_TEMPLATE * 1.3 + [17, 31])
    src = tmp_path / "celeba"
    (src / "person").mkdir(parents=True)
    Image.fromarray(photo).save(src / "person" / "000001.png")
    Image.fromarray(photo).save(src / "000002.png")
    listing = tmp_path / "list_landmarks_align_celeba.txt"
    listing.write_text("1\n" + " ".join(CELEBA_COLUMNS) + "\n000001.png "
                       + " ".join(str(int(v)) for v in landmarks.ravel()) + "\n")
    dst = tmp_path / "dst"
    assert align(src, dst, "--landmarks", listing) == 0
    files = report_of(dst)["files"]
    assert files["person/000001.png"]["status"] == "aligned"
    assert files["000002.png"]["status"] == "no_face"
    assert "not in the landmark list" in files["000002.png"]["reason"]
    written = np.asarray(Image.open(dst / "person" / "000001.png"))
    assert np.array_equal(written, align_face(photo, landmarks).crop)

    listing.write_text("3\nnot the columns\n")
    assert align(src, tmp_path / "bad", "--landmarks", listing) == 2
    assert not (tmp_path / "bad").exists()


def test_exif_orientation_is_honoured(tmp_path):
    upright = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "r.png", exif=exif)
    assert np.array_equal(load_rgb(tmp_path / "r.png"), upright)


def test_refuses_overlapping_folders_and_foreign_symlinks(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "id").mkdir(parents=True)
    assert align(src, src / "aligned") == 2
    assert align(src / "id", src) == 2
    assert "overlap" in capsys.readouterr().err

    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    try:
        (src / "id" / "link.png").symlink_to(outside)
    except OSError:
        pytest.skip("symbolic links not supported here")
    listing = tmp_path / "empty_list.txt"
    listing.write_text("0\n" + " ".join(CELEBA_COLUMNS) + "\n")
    assert align(src, tmp_path / "dst", "--landmarks", listing) == 1
    assert report_of(tmp_path / "dst")["files"]["id/link.png"]["status"] == "error"
    assert "outside SRC" in capsys.readouterr().err


def test_help_does_not_import_heavy_modules():
    code = ("import sys, argparse, recognition.align_cli as m; m.add_arguments(argparse.ArgumentParser()); "
            "print(sorted({'torch', 'cv2', 'facenet_pytorch'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
