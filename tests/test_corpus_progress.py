"""Progress of corpus methods (issue 34, item 4): error-minimizing noise reports each round (round k
of at least/at most N, the accuracy of its model on the perturbed images, the time left) on stderr
for ``faceguard poison`` and ``faceguard protect``, and prints nothing when progress is off."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceguard.attacks.poisons import ClasswiseErrorMinimizing
from faceguard.cli import main
from faceguard.progress import showing_progress
from faceguard.settings import CraftSettings
from recognition.models import create_model
from test_protect_support import build_tiny_profile, one_thread  # noqa: F401 (autouse)

ROUND_LINE = re.compile(r"error-minimizing-classwise: round (\d+) of at least 2, at most 3: accuracy on the "
                        r"perturbed images (\d\.\d{3}) \(stops at 1\.000 from round 2\), training loss \d+\.\d{3}, "
                        r"\d+ s this round; (about .* left \(at most .*\)|at most about .* left|done)")


def _attack(progress: bool | None) -> ClasswiseErrorMinimizing:
    settings = CraftSettings(method="error-minimizing-classwise", eps=8, steps=1, step_size=0.2, augment="none",
                             batch_size=10, min_rounds=2)
    torch.manual_seed(0)
    return ClasswiseErrorMinimizing(create_model("resnet18", num_classes=10, width=0.125), settings,
                                    train_steps=1, max_rounds=3, stop_accuracy=1.0, progress=progress)


def test_rounds_accuracy_and_time_left_are_reported(cifar_test_batch, capsys):
    """Every round gets a line whose accuracy is the one the method keeps, with the time left."""
    x, y = cifar_test_batch
    attack = _attack(progress=True)
    attack(x[:20], y[:20])
    err = capsys.readouterr().err
    assert "20 images, at least 2, at most 3 rounds of 5 batches each" in err  # 1 training + 2 × 2 batches
    rounds = [ROUND_LINE.search(line) for line in err.splitlines() if ": round " in line]
    assert rounds and all(rounds), err
    assert [int(m.group(1)) for m in rounds] == list(range(1, attack.rounds + 1))
    assert float(rounds[-1].group(2)) == pytest.approx(attack.train_accuracy, abs=5e-4)
    assert "about" in rounds[0].group(3)  # after round 1 of at least 2: an estimate, not "done"
    assert f"finished after {attack.rounds} round(s)" in err


@pytest.mark.parametrize("context", [None, False])
def test_nothing_is_printed_with_progress_off(cifar_test_batch, capsys, context):
    """Off by default (outside showing_progress), and off when a command turns it off."""
    x, y = cifar_test_batch
    if context is None:
        _attack(progress=None)(x[:20], y[:20])
    else:
        with showing_progress(context):
            _attack(progress=None)(x[:20], y[:20])
    assert capsys.readouterr() == ("", "")


def _folder(root: Path, images: torch.Tensor, labels: torch.Tensor, per_class: int = 2) -> Path:
    """An ImageFolder tree of real images: ``per_class`` PNGs of each of the first three classes."""
    for label in range(3):
        for k, index in enumerate(torch.nonzero(labels == label).flatten()[:per_class].tolist()):
            path = root / f"class{label}" / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((images[index] * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return root


@pytest.mark.parametrize("quiet", [False, True])
def test_poison_reports_rounds_unless_quiet(cifar_test_batch, tmp_path, capsys, quiet):
    """``faceguard poison`` with a corpus method: round lines with the accuracy; none with --quiet."""
    data = _folder(tmp_path / "data", *cifar_test_batch)
    argv = ["poison", str(data), "--out", str(tmp_path / "out"), "--width", "0.125", "--steps", "1",
            "--batch-size", "6", "--min-rounds", "2", "--device", "cpu", *(["--quiet"] if quiet else [])]
    assert main(argv) == 0
    err = capsys.readouterr().err
    if quiet:
        assert err == ""
    else:
        assert "error-minimizing-classwise: 6 images, at least 2, at most 10 rounds" in err
        assert re.search(r"round 2 of at least 2, at most 10: accuracy on the perturbed images \d\.\d{3}", err)


def test_protect_reports_the_identity_noise_rounds(tmp_path, tmp_path_factory, capsys):
    """``faceguard protect --method error-minimizing-classwise`` learns the noise over the folder
    first; its rounds are reported (no --quiet), 'round k of N' as its rounds are fixed."""
    from conftest import require_data

    with np.load(require_data("yaleb_cropped.npz"), allow_pickle=False) as bundle:
        faces = bundle["images"][[0, 1, 70, 71]]  # two photos each of two people
    for k, face in enumerate(faces):
        (tmp_path / "crops" / f"p{k // 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(tmp_path / "crops" / f"p{k // 2}" / f"{k}.png")
    profile = build_tiny_profile(tmp_path_factory.mktemp("profile"))
    capsys.readouterr()
    assert main(["protect", str(tmp_path / "crops"), "--method", "error-minimizing-classwise", "--aligned",
                 "--out", str(tmp_path / "out"), "--profile", str(profile), "--format", "png", "--device", "cpu",
                 "--steps", "1", "--min-rounds", "2", "--no-visibility"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"error-minimizing-classwise: round 1 of at least 2, at most 10: accuracy on the perturbed "
                     r"images \d\.\d{3}", err), err
