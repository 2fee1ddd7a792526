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


def test_each_members_crafting_view_is_the_view_a_scraper_cuts(dlib_cache):
    """At Δ = 0 the differentiable warp of the photo region gives the embedding of the view the
    recognizer's own pipeline cuts from the saved photo (bilinear vs OpenCV / dlib's pyramid)."""
    from faceguard.protect.evasion import load_ensemble, photo_views, saved_views
    from faceguard.protect.warp import face_region
    from recognition.detection import FaceDetector
    from recognition.files import load_rgb
    from faceguard.profile.store import load_profile

    photo = load_rgb(require_data("photos") / "biden" / "biden.jpg")
    face = FaceDetector(device="cpu").detect(photo)[0]
    profile = load_profile(None, torch.device("cpu"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGUARD_CACHE", str(dlib_cache))
        members = load_ensemble(("profile", "dlib-resnet", "sface"), profile, torch.device("cpu"))
    cover = np.concatenate([m.view.corners(face.landmarks) for m in members])
    region = face_region(photo, face.landmarks, profile.input_size, cover)
    x0, y0, x1, y1 = region.box
    pixels = torch.from_numpy(photo[y0:y1, x0:x1].copy()).permute(2, 0, 1)[None].float() / 255
    views = photo_views(members, [face.landmarks], [region], torch.device("cpu"))
    with torch.no_grad():
        crafted = [torch.nn.functional.normalize(e, dim=1) for e in views(pixels)]
    saved = saved_views(photo, [face.landmarks], members, torch.device("cpu"))
    cosines = [float((a * b).sum()) for a, b in zip(crafted, saved)]
    assert min(cosines) > 0.99, cosines  # measured on three photos: 0.998-1.0


def test_evasion_crafts_against_the_chosen_ensemble():
    from faceguard.protect.protector import Protector
    from recognition.files import load_rgb

    photo = load_rgb(require_data("photos") / "biden" / "biden.jpg")
    protector = Protector(method="evade", eps=16, steps=4, step_size=0.25, ensemble=["sface"], device="cpu")
    assert protector.settings.ensemble == ("sface",) and [m.name for m in protector.ensemble] == ["sface"]
    face = protector.protect(photo).faces[0]
    assert face.loss_crafted < 0.8 and face.loss_saved is not None and face.loss_saved < 0.8
