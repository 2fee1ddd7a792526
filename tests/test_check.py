"""``faceguard check``: dlib's pretrained ResNet asked, on real photos, whether protected photos still
match their person.

ORIGINALS is a tree of real bundle photos (realfaces/, small ones so MTCNN is fast) in person
folders: Elton John ×3, Madonna ×3, Jerry Seinfeld ×2 and Mindy Kaling ×1 (a person with one photo).
Within each person every MTCNN-chip distance is below 0.6 (0.31-0.49 measured) and across people
above it, so unchanged copies must all match, and photos of someone else put in a person's place
must not. One describer serves every test: descriptors are kept by file SHA-256, so each distinct
file is detected and described once.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import require_data
from faceguard.cli import main
from faceguard.protect import check as check_module
from faceguard.protect.check import CAVEAT, FaceDescriber, check_folders

PEOPLE = {"elton_john": ("val_1.jpg", "train_2.jpg", "train_3.jpg"),
          "madonna": ("val_1.jpg", "train_2.jpg", "val_3.jpg"),
          "jerry_seinfeld": ("val_1.jpg", "train_3.jpg"),
          "mindy_kaling": ("val_1.jpg",)}
# Madonna's protected photos replaced by Jerry Seinfeld's (two of them not in ORIGINALS)
SWAPS = {"madonna/val_1.jpg": "jerry_seinfeld/train_18.jpg", "madonna/train_2.jpg": "jerry_seinfeld/val_5.jpg",
         "madonna/val_3.jpg": "jerry_seinfeld/val_1.jpg"}


@pytest.fixture(scope="module")
def realfaces() -> Path:
    return require_data("realfaces")


@pytest.fixture(scope="module")
def describer(dlib_recognizer, dlib_cache) -> FaceDescriber:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))  # converted there by dlib_recognizer
        return FaceDescriber(device="cpu", batch_size=4)  # small: descriptors come in several batches


@pytest.fixture(scope="module")
def originals(realfaces, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check") / "originals"
    for person, files in PEOPLE.items():
        (root / person).mkdir(parents=True)
        for name in files:
            shutil.copy(realfaces / person / name, root / person / name)
    return root


def copy_tree(originals: Path, tmp_path: Path) -> Path:
    protected = tmp_path / "protected"
    shutil.copytree(originals, protected)
    return protected


def by_rel(result) -> dict:
    return {photo.rel: photo for photo in result.photos}


def test_unchanged_copies_all_still_match(originals, tmp_path, describer):
    result = check_folders(originals, copy_tree(originals, tmp_path), describer=describer)
    photos = by_rel(result)
    assert len(photos) == 9 and all(p.status == "matches" and p.matched for p in photos.values())
    assert all(p.own_distance == 0 for p in photos.values())
    for rel, photo in photos.items():
        if photo.person == "mindy_kaling":  # one photo: its own original decides
            assert (photo.basis, photo.other_photos, photo.person_distance, photo.identified) == \
                ("own original", 0, None, None)
        else:
            assert photo.basis == "other photos" and photo.other_photos == len(PEOPLE[photo.person]) - 1
            assert 0.25 < photo.person_distance < 0.6 and photo.person_matched == 1.0
            assert rel not in photo.person_distances and len(photo.person_distances) == photo.other_photos
            assert photo.identified and photo.nearest_person == photo.person and photo.nearest_photo != rel
    people = {p.name: p for p in result.people}
    assert people["madonna"].matches == 3 and people["madonna"].identified == people["madonna"].identifiable == 3
    assert people["mindy_kaling"].matches == 1 and people["mindy_kaling"].identifiable == 0
    assert result.count("matches") == 9 and result.exit_code == 1


def test_someone_else_in_a_persons_place_no_longer_matches(originals, tmp_path, realfaces, describer):
    protected = copy_tree(originals, tmp_path)
    for rel, source in SWAPS.items():
        shutil.copy(realfaces / source, protected / rel)
    # a PNG answers for a JPEG original, as `faceguard protect --format png` writes it
    rgb = Image.open(originals / "elton_john/val_1.jpg").convert("RGB")
    (protected / "elton_john/val_1.jpg").unlink()
    rgb.save(protected / "elton_john/val_1.png")
    photos = by_rel(check_folders(originals, protected, describer=describer))
    for rel in SWAPS:
        photo = photos[rel]
        assert photo.status == "evades" and photo.matched is False, photo
        assert photo.own_distance > 0.6 and photo.person_distance > 0.6 and photo.person_matched == 0
        assert photo.nearest_person == "jerry_seinfeld" and photo.identified is False
    png = photos["elton_john/val_1.jpg"]
    assert png.protected.endswith("val_1.png") and png.status == "matches" and png.own_distance < 0.05
    assert all(photos[rel].status == "matches" for rel in photos if rel not in SWAPS)
    # everyone one person: Jerry's photos in ORIGINALS now count as "the person's other photos"
    single = by_rel(check_folders(originals, protected, "single", describer=describer))
    assert {photo.person for photo in single.values()} == {"originals"}
    assert all(photo.other_photos == 8 and photo.identified is not None for photo in single.values())
    # ... except Mindy's: her only photo is no longer compared with itself, and she is nobody else
    assert [rel for rel, photo in single.items() if photo.status != "matches"] == ["mindy_kaling/val_1.jpg"]


def save_coffee(path: Path) -> None:
    """A real photo without a face: scikit-image's coffee cup."""
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.coffee()).save(path, quality=90)


def protected_with_problems(originals: Path, tmp_path: Path) -> Path:
    """Elton's train_3 corrupt, Jerry's train_3 a photo without a face, Mindy's photo missing;
    everything else unchanged."""
    protected = copy_tree(originals, tmp_path)
    (protected / "elton_john/train_3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    save_coffee(protected / "jerry_seinfeld/train_3.jpg")
    (protected / "mindy_kaling/val_1.jpg").unlink()
    return protected


def test_no_face_corrupt_and_missing_files_are_reported_and_the_run_goes_on(originals, tmp_path, describer):
    result = check_folders(originals, protected_with_problems(originals, tmp_path), describer=describer)
    photos = by_rel(result)
    corrupt, no_face, missing = (photos["elton_john/train_3.jpg"], photos["jerry_seinfeld/train_3.jpg"],
                                 photos["mindy_kaling/val_1.jpg"])
    assert corrupt.status == "error" and corrupt.reason.startswith("protected: OSError")  # Pillow's one-liner
    assert corrupt.problem_file.endswith("protected/elton_john/train_3.jpg")
    assert no_face.status == "no_face" and no_face.matched is False and "protected photo" in no_face.reason
    assert missing.status == "error" and missing.reason == "no protected counterpart"
    assert result.count("matches") == 6 and result.count("error") == 2 and result.exit_code == 1
    people = {p.name: p for p in result.people}
    assert (people["elton_john"].matches, people["elton_john"].errors) == (2, 1)
    assert (people["jerry_seinfeld"].matches, people["jerry_seinfeld"].no_face) == (1, 1)
    # the corrupt protected file does not hide its original from the others' comparisons
    assert len(photos["elton_john/val_1.jpg"].person_distances) == 2


@pytest.fixture()
def shared_describer(monkeypatch, describer):
    monkeypatch.setattr(check_module, "FaceDescriber", lambda device="auto": describer)


def test_command_prints_table_people_and_caveat_and_writes_json(originals, tmp_path, capsys, shared_describer):
    protected = protected_with_problems(originals, tmp_path)
    report = tmp_path / "out" / "check.json"
    code = main(["check", str(originals), str(protected), "--json", str(report), "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert code == 1
    assert lines[0].split() == ["photo", "person", "own", "others", "matched", "nearest", "verdict"]
    assert lines[1].startswith("elton_john/train_2.jpg") and lines[1].endswith("MATCHES")
    assert "only photo" not in out and "no face: no face detected in the protected photo" in out
    assert "check: jerry_seinfeld: 1 of 1 protected photos still match" in out
    assert "check: mindy_kaling: no protected photo could be compared (1 error)" in out
    assert "check: 9 pairs: 6 still match, 0 evade, 1 no face, 2 errors" in out
    assert lines[-1] == f"check: note: {CAVEAT}"
    assert err.count("\n") == 2 and "protected/elton_john/train_3.jpg: protected: OSError" in err
    saved = json.loads(report.read_text())
    assert saved["counts"] == {"matches": 6, "evades": 0, "no_face": 1, "error": 2} and saved["exit_code"] == 1
    assert saved["model"] == "dlib-resnet" and saved["threshold"] == 0.6 and saved["caveat"] == CAVEAT
    assert len(saved["photos"]) == 9 and saved["command"].startswith("faceguard check")


def test_command_exits_0_when_every_protected_photo_evades(tmp_path, realfaces, capsys, shared_describer):
    originals, protected = tmp_path / "originals", tmp_path / "protected"
    strangers = {"elton_john/val_1.jpg": "madonna/val_1.jpg", "madonna/val_1.jpg": "mindy_kaling/val_1.jpg"}
    for rel, stranger in strangers.items():
        for root, source in ((originals, rel), (protected, stranger)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(realfaces / source, root / rel)
    for root in (originals, protected):  # an unlabelled photo without a face: reported, not a failure
        save_coffee(root / "coffee.jpg")
    assert main(["check", str(originals), str(protected), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("only photo") == 2 and out.count(" evades") == 2
    coffee = next(line for line in out.splitlines() if line.startswith("coffee.jpg"))
    assert coffee.split()[1] == "-" and coffee.endswith("no face: no face detected in the original")
    assert "check: madonna: 0 of 1 protected photos still match; 1 compared with its own original only" in out
    assert "check: (unlabelled): no protected photo could be compared (1 no face)" in out
    assert "3 pairs: 0 still match, 2 evade, 1 no face, 0 errors" in out
    assert out.strip().splitlines()[-1] == f"check: note: {CAVEAT}"
    # a threshold above every distance: now both match
    assert main(["check", str(originals), str(protected), "--quiet", "--threshold", "2"]) == 1
    # one photo against one photo
    photo = originals / "elton_john/val_1.jpg"
    assert main(["check", str(photo), str(photo), "--quiet"]) == 1


def test_usage_errors_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "nowhere"), str(tmp_path)]) == 2
    assert main(["check", str(tmp_path / "empty"), str(tmp_path)]) == 2
    assert main(["check", str(tmp_path / "empty"), str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(tmp_path), str(tmp_path), "--identities", "cluster"])
    assert exit_info.value.code == 2


def test_help_states_the_limits_and_threshold_is_dlibs(capsys):
    from recognition.models.dlib_resnet import SAME_PERSON_THRESHOLD

    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "optimistic: other recognizers, other photos of the person already online, and robust training" in text
    assert check_module.THRESHOLD == SAME_PERSON_THRESHOLD
