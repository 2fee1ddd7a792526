"""The classification benchmark harness: configs, defenses, results format, a tiny end-to-end run."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.__main__ import main as benchmarks_main
from benchmarks.classification import select_rows, split_rows
from benchmarks.classification_configs import CLEAN, Poison, get_config
from benchmarks.defenses import (UniformNoiseDataset, apply_data_defense, gaussian_smoothing, jpeg_reencode,
                                 train_dp_sgd)
from benchmarks.results import mean_stderr, summarize, write_markdown
from recognition.datasets import ImageTensorDataset
from recognition.training import TrainConfig


def test_mean_and_standard_error():
    assert mean_stderr([2.0]) == (2.0, 0.0)
    mean, err = mean_stderr([1.0, 2.0, 3.0])
    assert mean == 2.0 and err == pytest.approx(1 / 3 ** 0.5)


def test_summarize_groups_seeds_and_keeps_runs():
    runs = [{"method": "clean", "eps": 0, "victim": "resnet18", "defense": "none", "seed": s, "accuracy": a}
            for s, a in ((0, 50.0), (1, 54.0))]
    runs.append({"method": "random", "eps": 8, "victim": "resnet18", "defense": "none", "seed": 0, "accuracy": 40.0})
    rows = summarize(runs, ["accuracy"])
    clean = next(r for r in rows if r["method"] == "clean")
    assert clean["seeds"] == [0, 1] and clean["accuracy"] == 52.0 and clean["accuracy_stderr"] == 2.0
    assert len(clean["runs"]) == 2 and len(rows) == 2


def test_markdown_reports_append_their_findings_when_present(tmp_path):
    report = tmp_path / "run.md"
    assert write_markdown(report, "# table\n") == report and report.read_text() == "# table\n"
    (tmp_path / "run.findings.md").write_text("## Findings ±ε\n", encoding="utf-8")
    write_markdown(report, "# table\n")
    assert report.read_text(encoding="utf-8") == "# table\n\n## Findings ±ε\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["run.findings.md", "run.md"]  # no temporary left


def test_configs_name_the_paper_rows_and_overrides_are_typed():
    paper = get_config("cifar10-paper")
    assert paper.steps == 240 and paper.restarts == 8 and paper.train_per_class is None
    assert {r.victim for r in paper.rows} == {"resnet18", "vgg19", "googlenet", "densenet121", "mobilenetv2"}
    labels = {r.poison.label for r in paper.extra_rows}
    assert {"alignment-joint-tv", "alignment-joint-t10", "alignment-independent-split05"} <= labels
    cpu = get_config("cifar10-cpu", ["steps=5", "seeds=0,1", "augment=false", "train_per_class=none",
                                     "baseline_steps=7", "step_size=0.25"])
    assert cpu.steps == 5 and cpu.seeds == (0, 1) and cpu.augment is False and cpu.train_per_class is None
    assert cpu.baseline_steps == 7 and cpu.step_size == 0.25
    for frozen in ("victims=x", "name=x", "rows=x"):
        with pytest.raises(ValueError, match="expected KEY=VALUE"):
            get_config("cifar10-cpu", [frozen])
    rows = select_rows(cpu.rows, ["clean", "alignment-joint"], ["resnet18"], [8])
    assert {(r.poison.label, r.poison.eps) for r in rows} == {("clean", 0), ("alignment-joint", 8)}
    assert Poison("alignment-joint", 8, target_fraction=0.05).key == "alignment-joint-t05-eps8"
    extras = select_rows(cpu.extra_rows, ["clean", "alignment-joint", "alignment-joint-double-s22"], None, [8],
                         ["none", "jpeg"])
    assert {(r.poison.label, r.defense) for r in extras} == {
        ("clean", "jpeg"), ("alignment-joint", "jpeg"), ("alignment-joint-double-s22", "none")}


def test_split_rows_keeps_each_poison_in_one_worker_and_balances_cost():
    cpu = get_config("cifar10-cpu")
    groups = split_rows(cpu, cpu.rows, set(cpu.rows), 2)
    assert len(groups) == 2 and sorted(map(id, sum(groups, []))) == sorted(map(id, cpu.rows))
    poisons = [{r.poison for r in g} for g in groups]
    assert not poisons[0] & poisons[1]
    aligned = [sum(p.method.startswith("alignment") for p in ps) for ps in poisons]
    assert min(aligned) >= 1                                   # the expensive crafting is shared
    assert split_rows(cpu, cpu.rows[:1], set(cpu.rows), 4) == [cpu.rows[:1]]


def test_data_defenses_change_the_images_as_documented():
    torch.manual_seed(0)
    images = (torch.rand(4, 3, 16, 16) * 255).to(torch.uint8)
    flat = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    assert torch.equal(gaussian_smoothing(flat), flat)                      # blur keeps constants
    smooth = gaussian_smoothing(images)
    assert smooth.float().std() < images.float().std()                     # and removes high frequencies
    jpeg = jpeg_reencode(images, quality=75)
    assert jpeg.shape == images.shape and not torch.equal(jpeg, images)
    dataset = ImageTensorDataset(images, torch.tensor([0, 1, 0, 1]), ["a", "b"])
    noisy = apply_data_defense(dataset, "noise", eps=8)
    assert isinstance(noisy, UniformNoiseDataset)
    x, _ = noisy[0]
    delta = x - dataset[0][0]
    assert delta.abs().max() <= 8 / 255 + 1e-6 and delta.abs().max() > 4 / 255
    assert apply_data_defense(dataset, "dpsgd", eps=8) is dataset
    gray = apply_data_defense(dataset, "grayscale", eps=8).images
    assert gray.shape == images.shape and torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    luma = (0.299 * images[:, 0].float() + 0.587 * images[:, 1].float() + 0.114 * images[:, 2].float())
    assert (gray[:, 0].float() - luma).abs().max() <= 1
    worse, better = (apply_data_defense(dataset, f"jpeg{q}", eps=8).images.float() for q in (10, 75))
    assert (worse - images.float()).abs().mean() > (better - images.float()).abs().mean()
    with pytest.raises(ValueError, match="unknown defense"):
        apply_data_defense(dataset, "magic", eps=8)
    # gray data (the face benchmark's Yale B): JPEG keeps one channel, grayscale changes nothing
    gray_images = images[:, :1].contiguous()
    assert torch.equal(apply_data_defense(ImageTensorDataset(gray_images, dataset.labels, dataset.classes),
                                          "grayscale", eps=8).images, gray_images)
    gray_jpeg = jpeg_reencode(gray_images, quality=50)
    assert gray_jpeg.shape == gray_images.shape and 0 < (gray_jpeg.float() - gray_images.float()).abs().mean() < 60


def test_adversarial_training_loss_trains_on_worst_case_views_within_eps():
    """The loss is taken on PGD views: higher than the clean CE, within ε of the images, and the
    attack leaves the model's mode (and batch-norm statistics) as they were."""
    from benchmarks.defenses import adversarial_training_loss

    torch.manual_seed(0)
    images, labels = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 10)).train()
    seen, modes = [], []

    def record(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen.append(inputs[0].detach())
        modes.append(module.training)

    model.register_forward_hook(record)
    loss, logits = adversarial_training_loss(8 / 255)(model, images, labels)
    assert model.training and logits.shape == (8, 10) and loss.shape == (8,)
    assert modes == [False, False, True]  # 2 attack steps in eval mode (batch statistics untouched), 1 training pass
    views = seen[-1]
    assert (views - images).abs().max() <= 8 / 255 + 1e-6 and (views - images).abs().max() > 4 / 255
    model.eval()
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(images), labels, reduction="none")
        attacked = torch.nn.functional.cross_entropy(model(views), labels, reduction="none")
    assert attacked.mean() > clean.mean()


def test_dp_sgd_trains_with_opacus_and_clips():
    from recognition.models import create_model

    torch.manual_seed(0)
    images = (torch.rand(32, 3, 32, 32) * 255).to(torch.uint8)
    dataset = ImageTensorDataset(images, torch.arange(32) % 10, [str(i) for i in range(10)])
    model = create_model("resnet18", num_classes=10, width=0.0625)
    before = [p.detach().clone() for p in model.parameters()]
    trained = train_dp_sgd(model, dataset, TrainConfig(epochs=1, batch_size=16, lr=0.1), clip=0.1, noise=0.01)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())   # GroupNorm instead
    assert trained(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    first_conv = next(trained.parameters())       # ModuleValidator.fix copies the model, then it trains
    assert first_conv.shape == before[0].shape and not torch.equal(first_conv, before[0])


def test_tiny_end_to_end_run_writes_results_in_the_shared_format(cifar_tar, tmp_path):
    out = tmp_path / "results"
    argv = ["classification", "--config", "cifar10-cpu", "--set", "train_per_class=7", "--set", "test_per_class=3",
            "--set", "steps=2", "seeds=0,1", "epoch_scale=0.1",
            "--only", "clean", "alignment-joint", "random", "--eps", "8",
            "--victims", "resnet18", "--work", str(tmp_path / "work"), "--out", str(out), "--name", "tiny"]
    assert benchmarks_main(argv + ["--jobs", "2", "--threads", "1"]) == 0
    data = json.loads((out / "tiny.json").read_text())
    assert data["command"].startswith("python -m benchmarks classification --config cifar10-cpu")
    assert len(data["config"]["data_sha256"]) == 64 and data["config"]["train_images"] == 70
    rows = {(r["method"], r["eps"]): r for r in data["rows"]}
    assert set(rows) == {("clean", 0), ("alignment-joint", 8), ("random", 8)}
    for row in rows.values():
        assert row["victim"] == "resnet18" and row["defense"] == "none" and row["seeds"] == [0, 1]
        assert 0 <= row["accuracy"] <= 100 and "accuracy_stderr" in row
    assert data["config"]["crafting"]["alignment-joint-eps8"]["linf"] == 8
    assert (out / "tiny.md").read_text().count("| resnet18 |") == 1 and (out / "tiny.png").stat().st_size > 0
    # A rerun (one process) reuses every cached victim run and poison (no training: runs.jsonl unchanged).
    log = (tmp_path / "work" / "runs.jsonl").read_text()
    assert benchmarks_main(argv) == 0
    assert (tmp_path / "work" / "runs.jsonl").read_text() == log and log.count("\n") == 6
    # Changed settings never reuse stale caches: other victim training retrains, other crafting refuses.
    clean_only = [a for a in argv if a not in ("alignment-joint", "random")]
    assert benchmarks_main([*clean_only, "--set", "epoch_scale=0.2"]) == 0
    assert (tmp_path / "work" / "runs.jsonl").read_text().count("\n") == 8
    with pytest.raises(ValueError, match="crafted with other settings"):
        benchmarks_main([*argv, "--set", "steps=3"])
    assert CLEAN.label == "clean"
    # A crafting seed (label suffix -cN) crafts another poison of the same recipe.
    assert benchmarks_main(["classification", "--config", "cifar10-cpu", "--set", "train_per_class=7",
                            "--set", "test_per_class=3", "--set", "steps=2", "--set", "epoch_scale=0.1",
                            "--set", "extra_seeds=0", "--extras", "--only", "alignment-joint-c1",
                            "--work", str(tmp_path / "work"), "--out", str(out), "--name", "seeded"]) == 0
    poisons = tmp_path / "work" / "poisons"
    seed0, seed1 = (load_file(str(poisons / f"{key}.safetensors"))["images"]
                    for key in ("alignment-joint-eps8", "alignment-joint-c1-eps8"))
    assert seed0.shape == seed1.shape and not torch.equal(seed0, seed1)


def test_poison_labels_name_backend_steps_and_crafting_seed():
    poison = Poison("alignment-joint", 8, backend="fd-frozen-1s", steps=41, seed=2)
    assert poison.label == "alignment-joint-fd-frozen-1s-s41-c2" and poison.key == poison.label + "-eps8"
    labels = {r.poison.label for r in get_config("cifar10-cpu").extra_rows}
    assert {"alignment-joint-c1", "alignment-joint-c2", "alignment-joint-fd-frozen-1s-s41-c1"} <= labels


def test_crafting_seed_section_pairs_poisons_by_crafting_seed():
    from benchmarks.classification_report import markdown

    def row(method: str, accuracy: float) -> dict:
        return {"method": method, "eps": 8, "victim": "resnet18", "defense": "none", "seeds": [0, 1],
                "accuracy": accuracy, "accuracy_stderr": 0.5}

    rows = [row("alignment-joint", 30.0), row("alignment-joint-c1", 32.0), row("alignment-joint-c2", 31.0),
            row("alignment-joint-fd-frozen-lag-s48", 31.0), row("alignment-joint-fd-frozen-lag-s48-c1", 32.0),
            row("alignment-joint-fd-frozen-lag-s48-c2", 34.0), row("alignment-joint-t10", 35.0)]
    crafting = {"alignment-joint-eps8": {"loss": 0.2}, "alignment-joint-c1-eps8": {"loss": 0.25},
                "alignment-joint-c2-eps8": {"loss": 0.22}}
    page = markdown("x", {"crafting": {k: {**v, "seconds": 1, "steps": 30, "linf": 8} for k, v in crafting.items()}},
                    "cmd", rows)
    section = page.split("## Crafting seeds")[1].split("\n## ")[0]
    assert "| alignment-joint | 0, 1, 2 | 30.00 / 32.00 / 31.00 | 31.00 ± 0.58 | 0.200–0.250 | – |" in section
    # differences 1, 0, 3 to the same crafting seed of alignment-joint: mean 1.33, s.e. 0.88
    assert "| alignment-joint-fd-frozen-lag-s48 | 0, 1, 2 | 31.00 / 32.00 / 34.00 | 32.33 ± 0.88 | – | 1.33 ± 0.88 |" in section
    assert "t10" not in section  # one crafting seed only: not a family


def test_poisons_config_runs_every_method_and_defense_with_per_method_crafting():
    from benchmarks.classification import poison_step_size, poison_steps

    config = get_config("cifar10-cpu-poisons")
    methods = {"random", "alignment-joint", "adversarial", "error-minimizing", "error-minimizing-classwise"}
    grey = {(r.poison.label, r.poison.eps) for r in config.rows if r.victim == "resnet18"}
    assert {(m, e) for m in methods for e in (4, 8, 16)} | {("clean", 0)} == grey
    black = {(r.poison.label, r.victim) for r in config.rows if r.victim != "resnet18" and r.poison != CLEAN}
    assert black == {(m, v) for m in methods for v in ("vgg19", "mobilenetv2")}
    defended = {(r.poison.label, r.defense) for r in config.extra_rows}
    assert {("clean", d) for d in ("grayscale", "jpeg10", "jpeg50", "jpeg75", "smoothing")} <= defended
    assert ("error-minimizing", "advtrain") in defended
    assert len(defended) == 6 * 6 and all(r.poison.eps in (0, 8) for r in config.extra_rows)
    em, adversarial = Poison("error-minimizing", 8), Poison("adversarial", 8)
    assert (poison_steps(config, em), poison_step_size(config, em)) == (10, 0.1)
    assert (poison_steps(config, adversarial), poison_step_size(config, adversarial)) == (30, 0.5)
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        get_config("cifar10-cpu-poisons", ["method_settings=x"])


@pytest.mark.parametrize("name, method", [("cifar10-cpu-ar", "autoregressive"), ("cifar10-cpu-synthetic", "synthetic")])
def test_data_free_configs_repeat_the_poisons_rows_for_their_method(name, method):
    config = get_config(name)
    poisons = get_config("cifar10-cpu-poisons")
    assert config.name == name
    assert (config.surrogate, config.victims, config.steps) == (poisons.surrogate, poisons.victims, poisons.steps)
    rows = {(r.poison.label, r.poison.eps, r.victim) for r in config.rows}
    assert rows == ({("clean", 0, v) for v in ("resnet18", "vgg19", "mobilenetv2")}
                    | {(method, e, "resnet18") for e in (4, 8, 16)}
                    | {(method, 8, v) for v in ("vgg19", "mobilenetv2")})
    defended = {(r.poison.label, r.defense) for r in config.extra_rows}
    assert defended == {(m, d) for m in ("clean", method)
                        for d in ("grayscale", "jpeg10", "jpeg50", "jpeg75", "smoothing", "advtrain")}


def test_report_compares_every_method_across_eps_victims_and_defenses(tmp_path):
    from benchmarks.classification_report import markdown, write_report

    def row(method: str, eps: int, accuracy: float, victim: str = "resnet18", defense: str = "none") -> dict:
        return {"method": method, "eps": eps, "victim": victim, "defense": defense, "seeds": [0],
                "accuracy": accuracy}

    rows = [row("clean", 0, 40.0), row("clean", 0, 30.0, defense="grayscale"), row("clean", 0, 38.0, "vgg19")]
    for method, base in (("alignment-joint", 36.0), ("error-minimizing", 20.0)):
        rows += [row(method, e, base - e / 4) for e in (4, 8, 16)]
        rows += [row(method, 8, base + 1, "vgg19"), row(method, 8, base + 6, defense="grayscale")]
    page = markdown("x", {}, "cmd", rows)
    by_eps = page.split("## Every method against ε")[1].split("\n## ")[0]
    assert "| error-minimizing | 40.00 | 19.00 | 18.00 | 16.00 | 0.47× | 0.45× | 0.40× |" in by_eps
    victims = page.split("## Every method at ε = 8 against each victim")[1].split("\n## ")[0]
    assert "| error-minimizing | 18.00 (0.45×) | 21.00 (0.55×) |" in victims
    defenses = page.split("## Defenses against every ε = 8 poison")[1].split("\n## ")[0]
    assert "| grayscale | 30.00 | 42.00 | 26.00 |" in defenses
    # means over (none, grayscale): clean 35, alignment (34 + 42) / 2, error-minimizing (18 + 26) / 2
    assert "| mean over the rows above | 35.00 | 38.00 | 22.00 |" in defenses
    paths = write_report("x", {}, "cmd", rows, tmp_path, {})
    assert {p.name for p in paths} == {"x.json", "x.md", "x.png", "x-defenses.png"}


def test_gpu_config_is_the_paper_scale_and_runs_tiny_here(cifar_tar, tmp_path, monkeypatch):
    """cifar10-gpu at full size is meant for a GPU; here its rows run on 20 images with 1/8-width nets."""
    import dataclasses

    from benchmarks import classification_configs
    from benchmarks.classification_configs import CONFIGS, GPU_METHOD, Net

    config = get_config("cifar10-gpu")
    assert config.train_per_class is None and config.test_per_class is None
    assert config.surrogate.width == 1.0 and config.victims["resnet18"].width == 1.0
    assert [(r.poison.label, r.poison.eps) for r in config.rows] == [("clean", 0), ("alignment-joint", 8),
                                                                     (GPU_METHOD, 8)]
    tiny = Net("resnet18", width=0.125, epochs=1, batch_size=10)
    monkeypatch.setitem(CONFIGS, "cifar10-gpu", lambda: dataclasses.replace(
        classification_configs.cifar10_gpu(), surrogate=tiny, victims={"resnet18": tiny}))
    out = tmp_path / "results"
    assert benchmarks_main(["classification", "--config", "cifar10-gpu", "--set", "train_per_class=2",
                            "--set", "test_per_class=2", "--set", "steps=1", "--set", "craft_batch=20",
                            "--work", str(tmp_path / "work"), "--out", str(out), "--threads", "1"]) == 0
    data = json.loads((out / "cifar10-gpu.json").read_text())
    assert {(r["method"], r["eps"]) for r in data["rows"]} == {("clean", 0), ("alignment-joint", 8), (GPU_METHOD, 8)}
    assert data["config"]["train_images"] == 20 and data["config"]["crafting"][f"{GPU_METHOD}-eps8"]["linf"] == 8
