"""dlib's face-recognition ResNet in PyTorch (``dlib-resnet``) and dlib's face chip without dlib.

Without dlib: the model file decodes into exactly the expected architecture (and stores the 0.6
threshold), converted weights are cached by SHA-256 and reloaded without decoding, primitive
encodings decode as dlib writes them, gradients reach the input, and the same-person threshold
separates real photos on the dlib-free path (MTCNN points -> estimated chip -> descriptor).

With dlib (``pytest.importorskip("dlib")``; CI installs ``dlib-bin`` through the test extras), on
real photos with dlib's own HOG detector and 5-point landmarks:

- descriptors of dlib's chips agree with ``face_recognition_model_v1.compute_face_descriptor`` to
  1e-4 (measured: 4.8e-7 at most over the 157 faces dlib finds in photos/ and realfaces/: float32
  summation order);
- our chip equals ``dlib.get_face_chip`` (measured: byte for byte on all 157 faces). The test
  allows one grey level on 0.1 % of the values, and 1e-3 on the resulting descriptor, because
  the truncation to uint8 can flip where the sampling position differs in the last bits of a
  double (the chip transform is solved with numpy, dlib uses its own pseudo-inverse);
- MTCNN's points give a chip whose descriptor lies within 0.3 of dlib's on these six photos
  (measured: 0.12-0.18; over all 157 faces: median 0.16, max 0.71; the threshold is 0.6).
"""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from recognition.dlib_format import Reader, read_dnn
from recognition.face_chip import CHIP_SIZE, face_chip, mtcnn_face_chip
from recognition.files import load_rgb
from recognition.models import create_model
from recognition.models import dlib_resnet as dr
from conftest import require_data

PHOTOS = ("obama/obama.jpg", "obama/obama2.jpg", "biden/biden.jpg", "biden/biden2.jpg",
          "kit_harington/john1.jpg", "rose_leslie/img2.jpg")


@pytest.fixture(scope="module")
def model(dlib_recognizer) -> dr.DlibResNet:
    return dlib_recognizer


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    root = require_data("photos")
    return {name: load_rgb(root / name) for name in PHOTOS}


def descriptors(model: torch.nn.Module, chips: list[np.ndarray]) -> np.ndarray:
    """The model's descriptors of uint8 HxWx3 chips, as float64 (N, 128)."""
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return model(x).double().numpy()


@pytest.fixture(scope="module")
def mtcnn_descriptors(model, photos) -> dict[str, np.ndarray]:
    """Descriptor of each photo's best MTCNN face through :func:`mtcnn_face_chip` (no dlib)."""
    from recognition.detection import FaceDetector

    detector = FaceDetector(device="cpu")
    chips = {name: mtcnn_face_chip(image, detector.detect(image, min_face_size=100)[0].landmarks)
             for name, image in photos.items()}
    return dict(zip(chips, descriptors(model, list(chips.values()))))


@pytest.fixture(scope="module")
def dlib_faces(photos) -> dict[str, SimpleNamespace]:
    """dlib's view of each photo's largest face: landmarks, chip and descriptor."""
    dlib = pytest.importorskip("dlib")
    models = dr.default_weights_path().parent
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    recognizer = dlib.face_recognition_model_v1(str(dr.default_weights_path()))
    faces = {}
    for name, image in photos.items():
        box = max(detector(image, 0), key=lambda rect: rect.area())
        shape = predictor(image, box)
        faces[name] = SimpleNamespace(
            landmarks=np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.float64),
            chip=dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25),
            descriptor=np.array(recognizer.compute_face_descriptor(image, shape)))
    return faces


def test_model_file_decodes_to_the_architecture(model):
    net = read_dnn(dr.default_weights_path())
    assert net.loss == "loss_metric_2" and net.input_size == (dr.INPUT_SIZE, dr.INPUT_SIZE)
    assert net.distance_threshold == pytest.approx(dr.SAME_PERSON_THRESHOLD, abs=1e-6)
    state = dr.state_dict_from_dlib(net)
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert {name: value.shape for name, value in state.items()} == expected
    np.testing.assert_allclose(state["mean_rgb"], [122.782, 117.001, 104.298], atol=1e-4)


def test_weights_are_cached_by_sha256_and_reloaded_without_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGUARD_CACHE", str(tmp_path))
    first = dr.load_dlib_weights()
    cached = sorted(tmp_path.iterdir())
    digest = dr.file_sha256(dr.default_weights_path())
    assert [path.name for path in cached] == [f"dlib_resnet-v{dr.CACHE_FORMAT}-{digest}.safetensors"]

    def no_decoding(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(dr, "read_dnn", no_decoding)
    second = dr.load_dlib_weights()
    assert all(torch.equal(first[name], second[name]) for name in first) and first.keys() == second.keys()


def test_reader_decodes_dlib_primitives():
    # 5, -28; 0.04 and 0.6 as dlib writes floats (mantissa, exponent: loss_metric's margin and
    # threshold in the model file); +inf; a bool; the string "abc"; a 1x1x1x2 float32 tensor.
    data = (b"\x01\x05" b"\x81\x1c" b"\x03\x0a\xd7\xa3\x81\x1c" b"\x03\x9a\x99\x99\x81\x18"
            b"\x01\x00\x02\x00\x7d" b"1" b"\x01\x03abc"
            b"\x01\x02\x01\x01\x01\x01\x01\x01\x01\x02" + np.array([1.5, -2], "<f4").tobytes())
    reader = Reader(data)
    assert (reader.int(), reader.int()) == (5, -28)
    assert (reader.float(), reader.float()) == (pytest.approx(0.04), pytest.approx(0.6))
    assert reader.float() == float("inf") and reader.bool() and reader.string() == "abc"
    np.testing.assert_array_equal(reader.tensor(), np.array([1.5, -2], np.float32).reshape(1, 1, 1, 2))
    assert reader.at_end()


def test_registry_contract(model):
    assert isinstance(model, dr.DlibResNet) and not model.training
    assert model(torch.rand(2, 3, dr.INPUT_SIZE, dr.INPUT_SIZE)).shape == (2, dr.DESCRIPTOR_SIZE)
    with pytest.raises(ValueError):
        create_model("dlib-resnet", width=0.5, pretrained=False)
    with pytest.raises(ValueError):
        create_model("dlib-resnet", num_classes=512, pretrained=False)


def test_gradients_reach_the_input(model, photos):
    chips = [cv2.resize(photos[name][:600], (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA)
             for name in ("obama/obama.jpg", "biden/biden.jpg")]
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float().div(255).requires_grad_()
    a, b = model(x)
    (a - b).norm().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[0].abs() > 0).float().mean() > 0.5
    assert (x.grad[1].abs() > 0).float().mean() > 0.5


def test_threshold_separates_real_photos_without_dlib(mtcnn_descriptors):
    d = mtcnn_descriptors
    same = [np.linalg.norm(d[a] - d[b]) for a, b in (("obama/obama.jpg", "obama/obama2.jpg"),
                                                     ("biden/biden.jpg", "biden/biden2.jpg"))]
    different = [np.linalg.norm(d[a] - d[b]) for a, b in (("obama/obama.jpg", "biden/biden.jpg"),
                                                          ("kit_harington/john1.jpg", "rose_leslie/img2.jpg"))]
    assert max(same) < dr.SAME_PERSON_THRESHOLD < min(different), (same, different)


def test_descriptors_match_dlib(model, dlib_faces):
    ours = descriptors(model, [face.chip for face in dlib_faces.values()])
    reference = np.stack([face.descriptor for face in dlib_faces.values()])
    assert np.abs(ours - reference).max() <= 1e-4


def test_face_chip_matches_dlib(model, photos, dlib_faces):
    chips = [face_chip(photos[name], face.landmarks) for name, face in dlib_faces.items()]
    for chip, face in zip(chips, dlib_faces.values()):
        difference = np.abs(chip.astype(int) - face.chip.astype(int))
        assert chip.shape == face.chip.shape and difference.max() <= 1
        assert (difference > 0).mean() <= 1e-3
    reference = np.stack([face.descriptor for face in dlib_faces.values()])
    assert np.linalg.norm(descriptors(model, chips) - reference, axis=1).max() <= 1e-3


def test_threshold_separates_real_photos_with_dlib_landmarks(model, photos, dlib_faces):
    chips = {name: face_chip(photos[name], face.landmarks) for name, face in dlib_faces.items()}
    d = dict(zip(chips, descriptors(model, list(chips.values()))))
    assert np.linalg.norm(d["obama/obama.jpg"] - d["obama/obama2.jpg"]) < dr.SAME_PERSON_THRESHOLD
    assert np.linalg.norm(d["obama/obama.jpg"] - d["biden/biden.jpg"]) > dr.SAME_PERSON_THRESHOLD


def test_mtcnn_points_estimate_dlib_descriptors(mtcnn_descriptors, dlib_faces):
    distances = [np.linalg.norm(mtcnn_descriptors[name] - face.descriptor) for name, face in dlib_faces.items()]
    assert max(distances) < 0.3, distances
