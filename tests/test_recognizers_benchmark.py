"""``python -m benchmarks recognizers`` end to end on three people of the real ``realfaces/`` photos
(Eric Clapton ×2, Negan ×3, Rick ×4: small photos, so MTCNN and the protection are quick), two
crafting steps: the results files exist, every row has the shared keys, the clean gallery matches
its people, every rate lies in [0, 1], and a rerun resumes from the work folder. Plus the people
split and the threshold fit on their own, without models. No statistical claims: two steps protect
nothing reliably."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require_data, require_models
from test_protect_support import one_thread  # noqa: F401 (autouse)

from benchmarks import recognizers_data
from benchmarks.recognizers_data import split_samples
from benchmarks.recognizers_metrics import fit_metrics, gallery_metrics, grown_box
from benchmarks.recognizers_models import (
    RECOGNIZERS,
    impostor_threshold,
    person_thresholds,
)

PEOPLE = ["eric_clapton", "negan", "rick"]
SMOKE = ["recognizers", "--datasets", "realfaces", "--people", *PEOPLE, "--limit-people", "3", "--steps", "2",
         "--methods", "alignment", "synthetic", "target-sface-ssim0.3",
         "--device", "cpu", "--quiet"]
ROW_KEYS = {"method", "eps", "victim", "defense", "seeds", "recognizer", "threat_model", "metric", "value"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, dlib_recognizer, dlib_cache):
    require_models(*RECOGNIZERS)  # insightface-mbf, edgeface-s, facenet-casia: make bench-models
    data = require_data("realfaces").parent
    root = tmp_path_factory.mktemp("recognizers")
    args = [*SMOKE, "--data", str(data), "--work", str(root / "work"), "--out", str(root / "out")]
    _run(args, dlib_cache)
    return root, args


def _run(args: list[str], dlib_cache: Path) -> None:
    """The benchmark command with the dlib weights converted by ``dlib_recognizer`` and one photo
    per ORL person as target (39, not 117: the plumbing is the same, the run shorter)."""
    from benchmarks.__main__ import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))
        patch.setattr(recognizers_data, "write_targets", functools.partial(recognizers_data.write_targets,
                                                                           per_person=1))
        assert main(args) == 0


def test_results_files_and_rows(smoke):
    root, _ = smoke
    result = json.loads((root / "out" / "recognizers.json").read_text())
    assert result["command"].startswith("python -m benchmarks recognizers")
    assert result["config"]["people"] == 3 and result["config"]["released"] == 5
    assert (root / "out" / "recognizers.png").stat().st_size > 0
    text = (root / "out" / "recognizers.md").read_text()
    assert result["command"] in text and "Not crafted with by any protection here: `insightface-mbf`, `edgeface-s`, `facenet-casia`" in text
    assert "**Held out** from every choice of settings (never tuned on): `facenet-casia`" in text
    seen = {name: info["seen_by"] for name, info in result["config"]["recognizers"].items()}
    targeted = "target-sface-ssim0.3"
    assert seen == {"dlib-resnet": [targeted], "profile": ["alignment", targeted],
                    "sface": [targeted], "insightface-mbf": [], "edgeface-s": [], "facenet-casia": []}  # synthetic crafts with none
    rows = result["rows"]
    assert all(ROW_KEYS <= set(row) for row in rows)
    cells = {(r["method"], r["recognizer"], r["defense"], r["threat_model"], r["metric"]) for r in rows}
    for method in ("clean", "alignment", "synthetic", targeted):
        for recognizer in RECOGNIZERS:
            for defense in ("none", "jpeg75", "half"):
                for threat_model, metric in (("gallery", "match_rate"), ("gallery", "top1"),
                                             ("scraper-fit", "logreg_top1"), ("scraper-fit", "centroid_top1")):
                    assert (method, recognizer, defense, threat_model, metric) in cells
    for row in rows:
        if row["threat_model"] != "quality":
            assert 0 <= row["value"] <= 1, row
        elif row["metric"].startswith("ssim"):
            assert 0 < row["value"] <= 1, row
    clean = {(r["recognizer"], r["metric"]): r["value"] for r in rows
             if r["method"] == "clean" and r["defense"] == "none"}
    assert clean[("dlib-resnet", "match_rate")] > 0.5
    protected = [r for r in rows if r["threat_model"] == "quality" and r["metric"] == "photos_protected"]
    assert sorted(r["method"] for r in protected) == ["alignment", "synthetic", targeted]
    assert all(r["value"] == 5 for r in protected)
    manifest = json.loads((root / "work" / f"{targeted}-eps16-steps2" / "manifest.json").read_text())
    assert "--targets" in manifest["command"] and len(manifest["settings"]["targets_sha256"]) == 64
    chosen = {d["target"] for entry in manifest["files"].values() for d in entry.get("face_details", [])}
    assert chosen and chosen <= {f"s{k}" for k in range(1, 40)}  # ORL's people, nobody of the benchmark


def test_rerun_resumes_from_the_work_folder(smoke, dlib_cache, capsys):
    _, args = smoke
    _run(args, dlib_cache)
    assert capsys.readouterr().out.count("0 protected, 0 no face, 0 error, 5 skipped") == 3


def test_split_is_by_person_and_alternates_in_manifest_order():
    people = {"b": [Path(f"b{k}.jpg") for k in range(5)], "a": [Path("a0.jpg"), Path("a1.jpg")],
              "solo": [Path("s.jpg")]}
    samples = split_samples(people)
    assert [(s.rel, s.released) for s in samples] == [
        ("a/a0.jpg", True), ("a/a1.jpg", False),
        ("b/b0.jpg", True), ("b/b1.jpg", False), ("b/b2.jpg", True), ("b/b3.jpg", False), ("b/b4.jpg", True)]
    assert {s.person for s in split_samples(people, limit=1)} == {"a"}
    assert {s.person for s in split_samples(people, only=["b"])} == {"b"}
    with pytest.raises(ValueError, match="unknown people"):
        split_samples(people, only=["nobody"])


def test_fitted_threshold_leaves_the_person_out():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 8))
    people = [name for name in "abcd" for _ in range(3)]
    thresholds = person_thresholds(RECOGNIZERS["profile"], vectors, people, far=0.1)
    keep = np.array([p != "a" for p in people])
    assert thresholds["a"] == pytest.approx(impostor_threshold(vectors[keep], [p for p in people if p != "a"],
                                                               "cosine", 0.1))
    assert set(person_thresholds(RECOGNIZERS["dlib-resnet"], vectors, people, 0.1).values()) == {-0.6}


def test_metrics_on_separable_embeddings():
    centres = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0])}
    gallery, owners = [centres["a"], None, centres["b"]], ["a", "a", "b"]
    probes, truth = [centres["a"] + 0.05, centres["b"] + 0.05], ["a", "b"]
    result = gallery_metrics(gallery, owners, probes, truth, "cosine", {"a": 0.9, "b": 0.9})
    assert (result["match_rate"], result["top1"], result["enrolled"]) == (1.0, 1.0, 2)
    fitted = fit_metrics(gallery, owners, probes, truth)
    assert (fitted["logreg_top1"], fitted["centroid_top1"], fitted["train"]) == (1.0, 1.0, 2)
    rows, cols = grown_box([10, 20, 30, 60], (50, 100, 3))
    assert (rows, cols) == (slice(16, 50), slice(8, 32))


def test_protection_runs_pin_eps_per_label():
    import argparse

    from benchmarks.recognizers import protection_run, protection_runs

    assert protection_runs(["alignment", "evade-sface@8", "evade-sface"], [16.0]) == [
        ("alignment", 16.0), ("evade-sface", 8.0), ("evade-sface", 16.0)]
    assert protection_run("evade@12") == "evade@12"
    for bad in ("magic", "evade@big"):
        with pytest.raises(argparse.ArgumentTypeError):
            protection_run(bad)


def test_protection_labels_pin_their_step_size_schedule():
    """A label measured before ``decay_at`` existed keeps the paper's schedule when the product's
    default changes (its cached tree stays valid); a label that names one keeps its own."""
    from benchmarks.recognizers import method_settings
    from faceguard.settings import PAPER_DECAYS

    assert method_settings("evade-sface-ssim1.5-s60", None)["decay_at"] == list(PAPER_DECAYS)
    assert method_settings("alignment", None)["decay_at"] == list(PAPER_DECAYS)
    default = method_settings("evade-sface-ssim1.5-s37-decay0.6", None)
    assert (default["steps"], default["decay_at"], default["reg_weight"]) == (37, [0.6], 1.5)
    assert method_settings("evade-sface-ssim1.5-s37-decay0.6", 5)["steps"] == 5
    assert default["seed"] == 0 and method_settings("evade-sface-ssim1.5-s37-decay0.6-seed1", None)["seed"] == 1


def test_crafted_with_names_the_recognizers_each_protection_saw():
    """White-box rows follow what crafting used: evasion its ensemble, alignment the profile, and
    synthetic patterns (drawn without any network) none."""
    from benchmarks.recognizers import crafted_with

    assert crafted_with("evade") == ["profile", "dlib-resnet"]
    assert crafted_with("alignment") == ["profile"]
    assert crafted_with("synthetic") == []


def test_a_data_free_protection_shows_only_its_steps_and_seed():
    from benchmarks.recognizers import method_settings

    assert method_settings("synthetic", None) == {"steps": 0, "seed": 0}
    assert {"step_size", "decay_at", "ensemble"} <= set(method_settings("evade", None))
