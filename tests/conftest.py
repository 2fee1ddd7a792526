"""Shared fixtures: the real data bundle and a small surrogate trained on real CIFAR-10 images.

Tests that need ``../shared/data`` (or ``$FACEGUARD_DATA``) skip with an explicit reason when it is
missing, except under CI (``CI=true``), where a missing bundle is a failure: CI must test real data.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from recognition.datasets import default_data_dir

IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(message: str) -> None:
    """Skip the test with ``message`` as its reason; in CI, where everything must run, fail it."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_data(name: str) -> Path:
    """Path of ``name`` inside the data bundle; skip (fail in CI) when it is not there."""
    path = default_data_dir() / name
    if not path.exists():
        skip_or_fail(f"real data bundle file {path} is missing (set FACEGUARD_DATA to the bundle folder)")
    return path


def require_models(*names: str) -> None:
    """Skip (fail in CI) unless every package the models ``names`` need is installed; the reason
    names the package and its ``make`` target (the benchmark-only ones: ``make bench-models``)."""
    from recognition.models.licences import MODELS

    for name in names:
        for package in MODELS[name].packages:
            if not package.installed():
                skip_or_fail(str(MODELS[name].missing(package)))


@pytest.fixture(scope="session")
def cifar_tar() -> Path:
    return require_data("cifar10_jpeg.tar.gz")


@pytest.fixture(scope="session")
def cifar_test_batch(cifar_tar):
    """32 real CIFAR-10 test images (on the 8-bit grid) and their labels."""
    from recognition.datasets import load_cifar10

    data = load_cifar10(cifar_tar, "test", per_class=4)
    x = data.images.float() / 255
    return x, data.labels


@pytest.fixture(scope="session")
def cifar_train_small(cifar_tar):
    """200 real CIFAR-10 training images (20 per class, on the 8-bit grid) as a dataset."""
    from recognition.datasets import load_cifar10

    return load_cifar10(cifar_tar, "train", per_class=20)


@pytest.fixture(scope="session")
def cifar_surrogate(cifar_tar):
    """A narrow CIFAR ResNet-18 trained briefly on 2,000 real training images (eval mode)."""
    from recognition.datasets import load_cifar10
    from recognition.models import create_model
    from recognition.training import TrainConfig, train_classifier

    torch.manual_seed(0)
    train = load_cifar10(cifar_tar, "train", per_class=200)
    model = create_model("resnet18", num_classes=10, width=0.125)
    train_classifier(model, train, TrainConfig(epochs=4, batch_size=64, lr=0.05, schedule="cosine"),
                     device="cpu", progress=False)
    return model.eval(), train


@pytest.fixture(scope="session")
def dlib_cache(tmp_path_factory) -> Path:
    """A weights cache for the session (``FACEGUARD_CACHE``), so tests never write the user's."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def dlib_recognizer(dlib_cache):
    """The registered ``dlib-resnet`` (eval mode), its weights decoded into the session's cache."""
    from recognition.models import create_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))
        return create_model("dlib-resnet").eval()
