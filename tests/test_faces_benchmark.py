"""Smoke run of ``python -m benchmarks faces`` on real Yale B / ORL data: every stage runs and the
results files have the shared format (a tiny setting: 3 identities, 1 epoch, 2 crafting steps)."""
from __future__ import annotations

import json

import pytest

from conftest import require_data

from benchmarks.__main__ import main
from benchmarks.faces_configs import CONFIGS, resolve_config

REFERENCES = ("pixels", "untrained", "untrained-bn")  # rows every seed adds: what no learning gives


def test_faces_benchmark_smoke_run_writes_results(tmp_path, monkeypatch) -> None:
    data_dir = require_data("yaleb_cropped.npz").parent
    require_data("orl_faces.npz")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["faces", "--config", "faces-cpu", "--data", str(data_dir), "--identities", "3", "--seeds", "0",
            "--extra-seeds", "1", "--eps", "16", "--random-eps", "16", "--variants", "joint", "--steps", "2",
            "--surrogate-epochs", "1", "--victim-epochs", "1", "--orl-pairs", "20", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "faces-cpu.json").read_text())
    assert result["command"] == "python -m benchmarks " + " ".join(argv)
    assert set(result["config"]["data_sha256"]) == {"yaleb_cropped.npz", "orl_faces.npz", "orl.bin"}
    assert result["config"]["steps"] == 2 and result["config"]["eps"] == [16]
    rows = {(row["method"], row["eps"]): row for row in result["rows"]}
    assert set(rows) == {("clean", 0), ("alignment-joint", 16), ("random", 16), *((name, 0) for name in REFERENCES)}
    for row in rows.values():
        assert row["victim"] == "ir18" and row["defense"] == "none" and row["seeds"] == [0, 1]
        for metric in ("top1", "top5", "cross_light_top1", "cross_light_top5", "orl", "orl_auc", "orl_tar"):
            assert 0 <= row[metric] <= 100 and row[f"{metric}_stderr"] >= 0
        assert row["top1"] <= row["top5"] and row["cross_light_top1"] <= row["cross_light_top5"]
        assert [run["seed"] for run in row["runs"]] == [0, 1]
        assert ("clean_train_acc" in row) == (row["method"] not in REFERENCES)
    assert rows[("pixels", 0)]["top1_stderr"] == 0  # raw pixels do not depend on the seed
    metrics = ("top1", "cross_light_top1", "orl", "orl_auc")  # BatchNorm statistics of faces change the embedding
    assert any(rows[("untrained-bn", 0)][m] != rows[("untrained", 0)][m] for m in metrics)
    assert 0 <= rows[("alignment-joint", 16)]["alignment_loss"] <= 2
    markdown = (tmp_path / "faces-cpu.md").read_text()
    assert "| alignment-joint | 16 | ir18 | 0,1 |" in markdown and result["command"] in markdown
    assert "cross light top1 drop" in markdown
    assert (tmp_path / "faces-cpu.png").stat().st_size > 1000


def test_poisons_config_crafts_every_method_and_trains_under_each_defense(tmp_path, monkeypatch) -> None:
    data_dir = require_data("yaleb_cropped.npz").parent
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["faces", "--config", "faces-cpu-poisons", "--data", str(data_dir), "--identities", "3", "--seeds", "0",
            "--random-eps", "--steps", "1", "--surrogate-epochs", "1", "--victim-epochs", "1", "--orl-pairs", "0",
            "--set", "defenses=jpeg10,smoothing", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "faces-cpu-poisons.json").read_text())
    methods = ("clean", "alignment-joint", "adversarial", "error-minimizing", "error-minimizing-classwise")
    rows = {(row["method"], row["defense"]): row for row in result["rows"]}
    references = {(name, "none") for name in REFERENCES}
    assert set(rows) == {(m, d) for m in methods for d in ("none", "jpeg10", "smoothing")} | references
    assert all(row["eps"] == (0 if row["method"] in ("clean", *REFERENCES) else 16) for row in rows.values())
    assert "craft_loss" in rows[("adversarial", "none")] and "alignment_loss" in rows[("alignment-joint", "none")]
    assert rows[("clean", "jpeg10")]["top1"] != rows[("clean", "none")]["top1"] or \
        rows[("clean", "jpeg10")]["clean_train_acc"] != rows[("clean", "none")]["clean_train_acc"]
    markdown = (tmp_path / "faces-cpu-poisons.md").read_text()
    assert "| error-minimizing-classwise | 16 | smoothing | ir18 | 0 |" in markdown
    with pytest.raises(ValueError, match="data defenses only"):
        main([*argv[:-2], "--set", "defenses=dpsgd", "--out", str(tmp_path)])


def test_configs_hold_the_paper_setting() -> None:
    paper = CONFIGS["celeba-paper"]
    assert (paper.data, paper.num_test, paper.victim, paper.surrogate_epochs, paper.victim_epochs) == \
        ("celeba", 1000, "ir18", 125, 125)
    assert (paper.steps, paper.restarts, paper.eps, paper.variants) == (50, 1, (8, 16, 32), ("joint", "independent"))
    assert resolve_config("celeba-paper", surrogate="ir50").surrogate == "ir50"  # Table 10


def test_table10_option_crafts_with_a_larger_surrogate_for_the_ir18_victim(tmp_path, monkeypatch) -> None:
    data_dir = require_data("yaleb_cropped.npz").parent
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["faces", "--config", "faces-cpu", "--data", str(data_dir), "--identities", "2", "--seeds", "0",
            "--extra-seeds", "--eps", "16", "--random-eps", "--variants", "joint", "--steps", "1",
            "--surrogate", "ir50", "--surrogate-epochs", "1", "--victim-epochs", "1", "--orl-pairs", "0",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "faces-cpu-sur-ir50.json").read_text())
    assert (result["config"]["surrogate"], result["config"]["victim"]) == ("ir50", "ir18")
    rows = {(row["method"], row["eps"]): row for row in result["rows"]}
    assert set(rows) == {("clean", 0), ("alignment-joint", 16), *((name, 0) for name in REFERENCES)}
    assert 0 <= rows[("alignment-joint", 16)]["alignment_loss"] <= 2 and rows[("clean", 0)]["victim"] == "ir18"


def test_set_types_fields_from_the_config_and_keeps_the_name() -> None:
    from benchmarks.faces_configs import set_overrides

    changes = set_overrides("faces-cpu", ["size=64", "craft_augment=true", "eps=4,8", "lr=0.05"])
    assert changes == {"size": 64, "craft_augment": True, "eps": (4, 8), "lr": 0.05}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        set_overrides("faces-cpu", ["name=x"])


def test_yaleb_subset1_gallery_holds_seven_frontal_images_per_test_identity() -> None:
    import torch

    from benchmarks.faces_pipeline import load_yaleb_split, yaleb_frontal

    path = require_data("yaleb_cropped.npz")
    config = resolve_config("faces-cpu")
    gallery = yaleb_frontal(path, config)
    test = load_yaleb_split(path, config, 8)[1]
    assert gallery.shape == test.labels.shape and gallery.dtype == torch.bool
    assert torch.bincount(test.labels[gallery]).tolist() == [7] * len(test.classes)  # subset 1 of Yale B
    pretrain, frontal = load_yaleb_split(path, config, 8)[0], yaleb_frontal(path, config, part="pretrain")
    counts = torch.bincount(pretrain.labels[frontal], minlength=len(pretrain.classes))
    assert frontal.shape == pretrain.labels.shape and set(counts.tolist()) == {6, 7}  # three people lack one
    with pytest.raises(ValueError, match="part must be"):
        yaleb_frontal(path, config, part="train")
