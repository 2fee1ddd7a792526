"""faceguard protect --method evade on a real photo: the saved photo keeps the bound and the
untouched background, the crafted and the saved faces' embeddings move away from their clean
ones, and dlib-resnet's descriptor of the saved face moves."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import require_data


@pytest.fixture(scope="module")
def evaded(dlib_recognizer, dlib_cache):
    from faceguard.protect.protector import Protector
    from recognition.files import load_rgb

    photo = load_rgb(require_data("photos") / "obama" / "obama.jpg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))  # dlib_recognizer converted the weights there
        protector = Protector(method="evade", eps=16, steps=8, step_size=0.25, device="cpu")
    return protector, photo, protector.protect(photo)


def test_evasion_keeps_the_bound_and_the_background(evaded):
    protector, photo, result = evaded
    diff = np.abs(result.image.astype(int) - photo.astype(int))
    assert 0 < diff.max() <= 16
    x0, y0, x1, y1 = (int(v) for v in result.faces[0].box)
    assert (diff[y0:y1, x0:x1] > 0).mean() > 0.3  # the face is perturbed ...
    assert diff[:, :max(0, x0 - (x1 - x0))].max(initial=0) == 0  # ... and far from it nothing changed


def test_crafted_and_saved_faces_move_away_from_their_clean_embeddings(evaded, dlib_recognizer):
    from recognition.detection import FaceDetector
    from recognition.face_chip import mtcnn_face_chip

    protector, photo, result = evaded
    face = result.faces[0]
    assert face.loss_clean == pytest.approx(1.0, abs=1e-4)  # cosine of a clean face with itself
    assert face.loss_crafted < 0.9 and face.loss_saved is not None and face.loss_saved < 0.9
    detector = FaceDetector(device="cpu")
    chips = [mtcnn_face_chip(image, detector.detect(image)[0].landmarks) for image in (photo, result.image)]
    with torch.no_grad():
        descriptors = dlib_recognizer(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255)
    assert (descriptors[0] - descriptors[1]).norm() > 0.3


def test_evasion_refuses_what_it_does_not_support():
    from faceguard.protect.protector import Protector

    with pytest.raises(ValueError, match="alignment or evade"):
        Protector(method="tensorclog", device="cpu")
    with pytest.raises(ValueError, match="alignment method only"):
        Protector(method="evade", aligned=True, device="cpu")
