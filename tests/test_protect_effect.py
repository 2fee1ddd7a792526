"""``python -m benchmarks protect-effect`` end to end on a tiny Yale B setting: the results rows,
the saved protected photos (within ε of the clean ones for PNG, JPEG kept JPEG) being exactly what
the victims trained on, resuming from the work folder, and refusing a work folder of other settings."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_data
from test_protect_support import one_thread  # noqa: F401 (autouse)

TINY = ["protect-effect", "--identities", "3", "--images", "4", "--steps", "2", "--seeds", "0", "1",
        "--baseline-seeds", "0", "--set", "surrogate_epochs=1", "victim_epochs=1", "steps=1", "orl_pairs=20",
        "batch_size=8", "--device", "cpu", "--quiet"]
REFERENCES = ["pixels", "untrained", "untrained-bn"]  # the face benchmark's floor rows
METHODS = ["clean", "clean-jpeg", "protect-png", "protect-jpeg", "protect-png-jpeg", "alignment-joint", "random",
           *REFERENCES]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from benchmarks.__main__ import main

    require_data("yaleb_cropped.npz"), require_data("orl_faces.npz")
    root = tmp_path_factory.mktemp("protect-effect")
    args = [*TINY, "--work", str(root / "work"), "--out", str(root / "out")]
    assert main(args) == 0
    return root, args


def _rows(root):
    return json.loads((root / "out" / "protect-effect.json").read_text())


def test_results_hold_every_row_with_its_metrics(tiny_run):
    root, _ = tiny_run
    result = _rows(root)
    assert result["command"].startswith("python -m benchmarks protect-effect")
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == METHODS
    for method, row in rows.items():
        assert {"eps", "victim", "defense", "seeds", "top1", "top5", "orl", "top1_stderr"} <= set(row), method
        assert row["eps"] == (0 if method.startswith("clean") or method in REFERENCES else 16)
        assert row["seeds"] == ([0] if method in ("alignment-joint", "random") else [0, 1])
        assert ("top1_drop" in row) == (not method.startswith("clean"))
    for fmt in ("png", "jpeg"):
        row = rows[f"protect-{fmt}"]
        assert row["photos"] == row["photos_protected"] == 12 and row["detection_rate"] == 100.0
        assert row["loss_crafted"] < row["loss_clean"] and row["loss_saved"] is not None
        assert row["seconds_per_photo"] > 0
    assert rows["protect-png"]["linf_max"] == 16  # lossless: the bound holds exactly after saving
    assert "alignment_loss" in rows["alignment-joint"]
    drop = 100 * (1 - rows["protect-jpeg"]["runs"][0]["top1"] / rows["clean-jpeg"]["runs"][0]["top1"])
    assert rows["protect-jpeg"]["runs"][0]["top1_drop"] == pytest.approx(drop, abs=1e-3)
    assert "protect-png" in (root / "out" / "protect-effect.md").read_text()


def test_victims_trained_on_the_saved_protected_photos(tiny_run):
    from benchmarks.faces_configs import resolve_config
    from benchmarks.faces_pipeline import load_photo_faces

    root, _ = tiny_run
    work = root / "work"
    files = sorted(p.relative_to(work / "photos-png").as_posix() for p in (work / "photos-png").rglob("*.png"))
    assert len(files) == 12
    changed = 0
    for name in files:
        clean = np.asarray(Image.open(work / "photos-png" / name)).astype(int)
        saved = np.asarray(Image.open(work / "protected-png" / name)).astype(int)
        assert saved.shape == clean.shape == (192, 168)
        assert np.abs(saved - clean).max() <= 16
        changed += int((saved != clean).any())
        assert Image.open(work / "protected-jpeg" / name.replace(".png", ".jpg")).format == "JPEG"
        reencoded = Image.open(work / "protected-png-jpeg" / name.replace(".png", ".jpg"))
        assert reencoded.format == "JPEG" and np.abs(np.asarray(reencoded).astype(int) - saved).mean() < 3
    assert changed == 12
    classes = sorted({name.split("/")[0] for name in files})
    labels = torch.tensor([classes.index(name.split("/")[0]) for name in files])
    config = resolve_config("faces-cpu")
    runs = {(row["method"], run["seed"]): run for row in _rows(root)["rows"] for run in row["runs"]}
    for folder, method in (("protected-png", "protect-png"), ("photos-png", "clean")):
        crops = load_photo_faces(work / folder, files, labels, classes, config)
        digest = hashlib.sha256(crops.images.contiguous().numpy().tobytes()).hexdigest()
        assert runs[(method, 0)]["train_sha256"] == digest
    assert runs[("protect-png", 0)]["train_sha256"] != runs[("clean", 0)]["train_sha256"]
    assert len({runs[(m, 0)]["train_sha256"] for m in ("protect-png", "protect-png-jpeg", "protect-jpeg")}) == 3


def test_rerun_resumes_from_the_work_folder_and_refuses_other_settings(tiny_run, capsys):
    from benchmarks.__main__ import main

    root, args = tiny_run
    before = _rows(root)["rows"]
    capsys.readouterr()
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "0 protected" in output and "victim " not in output and ": crafted" not in output
    assert _rows(root)["rows"] == before
    with pytest.raises(SystemExit, match="other settings"):
        main([*args, "--eps", "8"])


def test_adversarial_method_protects_the_trees_with_it_and_names_its_results(tmp_path):
    """``--method adversarial``: the product crafts the class-targeted poison, the crop-level row is
    that method's, and the results and work folder carry the method's name."""
    from benchmarks.__main__ import main

    args = [*TINY, "--seeds", "0", "--method", "adversarial", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "protect-effect-adversarial.json").read_text())
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["clean", "clean-jpeg", "protect-png", "protect-jpeg", "protect-png-jpeg", "adversarial",
                          "random", *REFERENCES]
    assert result["config"]["method"] == "adversarial" and result["config"]["steps"] == 2
    assert rows["protect-png"]["loss_crafted"] < rows["protect-png"]["loss_clean"]
    assert rows["protect-png"]["linf_max"] == 16 and "craft_loss" in rows["adversarial"]
    manifest = json.loads((tmp_path / "work" / "protected-png" / "manifest.json").read_text())
    assert manifest["settings"]["crafting"]["method"] == "adversarial"


@pytest.mark.parametrize("stale", ["metric", "images"])
def test_a_stale_cached_victim_is_trained_again(tiny_run, capsys, stale):
    """A cached victim lacking a reported metric (measured before it existed), or trained on other
    images (its set was protected again), is trained again; the others are kept."""
    from benchmarks.__main__ import main

    root, args = tiny_run
    cached = root / "work" / "victims" / "random-seed0.json"
    run = json.loads(cached.read_text())
    if stale == "metric":
        del run["top5"]
    else:
        run["train_sha256"] = "0" * 64
    cached.write_text(json.dumps(run))
    capsys.readouterr()
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "victim random seed 0" in output and output.count("victim ") == 1
    again = json.loads(cached.read_text())
    assert "top5" in again and again["train_sha256"] != "0" * 64


def test_drops_are_taken_per_seed_against_the_baseline_for_each_metric_present():
    from benchmarks.protect_effect_report import add_drops

    runs = [{"method": "clean", "seed": 0, "top1": 80.0, "cross_light_top1": 50.0},
            {"method": "clean", "seed": 1, "top1": 90.0, "cross_light_top1": 60.0},
            {"method": "protect-png", "seed": 1, "top1": 45.0, "cross_light_top1": 45.0},
            {"method": "random", "seed": 0, "top1": 60.0}]
    out = add_drops(runs, {"clean": None, "protect-png": "clean", "random": "clean"})
    assert "top1_drop" not in out[0] and "top1_drop" not in out[1]
    assert out[2]["top1_drop"] == 50.0 and out[2]["cross_light_top1_drop"] == 25.0
    assert out[3]["top1_drop"] == 25.0 and "cross_light_top1_drop" not in out[3]
