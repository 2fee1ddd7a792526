"""MTCNN detection and five-point alignment on the real colour photos of the data bundle.

One detector and one detection pass over the 16 photos are shared by the module (MTCNN on CPU is
the slow part). Alignment accuracy is checked twice: the detected landmarks mapped by the fitted
matrix, and MTCNN run again on the aligned crop. The inverse mapping is checked exactly on
coordinate images (bilinear interpolation reproduces a linear ramp exactly, so a pixel's value
says where it was sampled) and on the photos themselves (pixels outside the mask byte-identical).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import require_data
from recognition.alignment import (ARCFACE_TEMPLATE, align_face, estimate_similarity, paste_back,
                                   paste_mask, read_landmark_list, transform_points)
from recognition.detection import FaceDetector

EYE_TOLERANCE_PX = 4.0  # fitted eyes vs template, in 112-crop pixels
REDETECT_TOLERANCE_PX = 4.5  # eyes found again by MTCNN on the crop vs template
# Replicated border around a 112 crop before re-detection: MTCNN's box regressor expects some
# context around the face, and a tight crop shifts its landmarks by several pixels.
REDETECT_PAD = 28


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    root = require_data("photos")
    return {path.relative_to(root).as_posix(): np.asarray(Image.open(path).convert("RGB"))
            for path in sorted(root.glob("*/*.jpg"))}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    # The smallest face in these photos is about 80 px wide; starting MTCNN's pyramid at 40 px
    # instead of 20 skips its two largest levels and cuts CPU time by about a third.
    return FaceDetector(device="auto", min_face_size=40)


@pytest.fixture(scope="module")
def detections(photos, detector) -> dict:
    names = list(photos)
    return dict(zip(names, detector.detect_batch([photos[name] for name in names])))


@pytest.fixture(scope="module")
def singles(photos, detections) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, photo, best face's landmarks) for the 13 single-person photos."""
    return [(name, photos[name], detections[name][0].landmarks)
            for name in photos if not name.startswith("group/")]


def eye_errors(points: np.ndarray) -> np.ndarray:
    """Distances of the two eye points to their template positions (112 crop pixels)."""
    return np.linalg.norm(points[:2] - ARCFACE_TEMPLATE[:2], axis=1)


def test_every_single_person_photo_has_a_confident_face(photos, detections):
    singles = [name for name in photos if not name.startswith("group/")]
    assert len(singles) == 13
    for name in singles:
        faces = detections[name]
        assert faces and faces[0].score > 0.9, name
        assert [face.score for face in faces] == sorted((face.score for face in faces), reverse=True)
        face = faces[0]
        assert face.box.shape == (4,) and face.landmarks.shape == (5, 2)
        x1, y1, x2, y2 = face.box
        assert (x1 <= face.landmarks[:, 0]).all() and (face.landmarks[:, 0] <= x2).all(), name
        assert (y1 <= face.landmarks[:, 1]).all() and (face.landmarks[:, 1] <= y2).all(), name
        assert face.landmarks[0, 0] < face.landmarks[1, 0], f"{name}: left eye must come first"


def test_group_photos_have_several_faces(detections):
    groups = {name: faces for name, faces in detections.items() if name.startswith("group/")}
    assert len(groups) == 3
    for name, faces in groups.items():
        assert len(faces) >= 2, name
        assert all(face.score >= 0.9 for face in faces)


def test_batches_group_sizes_and_match_single_detection(photos, detector, detections):
    john, kit = photos["kit_harington/john2.jpg"], photos["group/kit_with_rose.jpg"]
    grey = np.full_like(john, 128)
    batch = detector.detect_batch([john, kit, grey, Image.fromarray(john)])
    assert [len(faces) for faces in batch] == [1, len(detections["group/kit_with_rose.jpg"]), 0, 1]
    for faces in (batch[0], batch[3]):  # in a batch with a face-less image, and from PIL
        np.testing.assert_allclose(faces[0].box, detections["kit_harington/john2.jpg"][0].box, atol=0.5)
        np.testing.assert_allclose(faces[0].landmarks,
                                   detections["kit_harington/john2.jpg"][0].landmarks, atol=0.5)
    assert detector.detect(grey) == []
    with pytest.raises(ValueError):
        detector.detect(john[..., 0])


def test_estimate_similarity_recovers_a_known_transform():
    angle, scale, shift = np.deg2rad(20), 2.5, np.array([300.0, 140.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = ARCFACE_TEMPLATE @ rotation.T + shift
    matrix = estimate_similarity(landmarks)
    np.testing.assert_allclose(transform_points(landmarks, matrix), ARCFACE_TEMPLATE, atol=1e-4)
    np.testing.assert_allclose(transform_points(landmarks, estimate_similarity(landmarks, 224)),
                               ARCFACE_TEMPLATE * 2, atol=1e-4)
    with pytest.raises(ValueError):
        estimate_similarity(np.zeros((4, 2)))


def test_alignment_puts_the_eyes_on_the_template(singles):
    for name, photo, landmarks in singles:
        aligned = align_face(photo, landmarks)
        assert aligned.crop.shape == (112, 112, 3) and aligned.crop.dtype == np.uint8
        (a, b, _), (c, d, _) = aligned.matrix
        assert a == pytest.approx(d) and b == pytest.approx(-c), f"{name}: not a similarity"
        errors = eye_errors(transform_points(landmarks, aligned.matrix))
        assert errors.max() < EYE_TOLERANCE_PX, f"{name}: eyes {errors} px off the template"


def test_redetection_on_the_aligned_crop_finds_the_eyes_on_the_template(singles, detector):
    """MTCNN run again on each crop (all 13 in one batch: same size). The eyes cannot land closer
    to the template than the similarity fit allows (up to 3.3 px here: five points, four degrees
    of freedom), plus MTCNN's own landmark noise, hence the wider per-eye bound."""
    crops = [cv2.copyMakeBorder(align_face(photo, landmarks).crop, *[REDETECT_PAD] * 4,
                                cv2.BORDER_REPLICATE) for _, photo, landmarks in singles]
    errors = []
    for (name, _, _), faces in zip(singles, detector.detect_batch(crops, batch_size=len(crops))):
        assert faces, f"{name}: no face found again in the aligned crop"
        errors.append(eye_errors(faces[0].landmarks - REDETECT_PAD))
        assert errors[-1].max() < REDETECT_TOLERANCE_PX, f"{name}: eyes {errors[-1]} px off"
    assert np.mean(errors) < 3.0


def test_inverse_maps_the_template_back_onto_the_landmarks(singles):
    for name, photo, landmarks in singles:
        aligned = align_face(photo, landmarks)
        np.testing.assert_allclose(transform_points(transform_points(landmarks, aligned.matrix),
                                                    aligned.inverse), landmarks, atol=1e-6)
        scale = np.hypot(*aligned.matrix[0, :2])
        residual = np.linalg.norm(transform_points(landmarks, aligned.matrix) - ARCFACE_TEMPLATE, axis=1)
        back = np.linalg.norm(transform_points(ARCFACE_TEMPLATE, aligned.inverse) - landmarks, axis=1)
        np.testing.assert_allclose(back, residual / scale, atol=1e-6, err_msg=name)


def test_crop_and_paste_back_sample_the_exact_positions(singles):
    """Coordinate images: align_face must sample photo (x, y) = inverse(u, v), paste_back crop
    (u, v) = matrix(x, y), up to OpenCV's 1/32-pixel quantisation of sub-pixel positions."""
    for name, photo, landmarks in singles[:4]:
        height, width = photo.shape[:2]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        aligned = align_face(np.dstack([xs, ys]), landmarks)
        vs, us = np.mgrid[0:112, 0:112]
        crop_grid = np.stack([us.ravel(), vs.ravel()], axis=1)
        expected = transform_points(crop_grid, aligned.inverse)
        inside = ((expected >= 0) & (expected <= [width - 1, height - 1])).all(axis=1)
        np.testing.assert_allclose(aligned.crop.reshape(-1, 2)[inside], expected[inside], atol=1 / 32)

        coordinate_crop = np.dstack([us, vs]).astype(np.float32)
        pasted = paste_back(np.full((height, width, 2), -1, np.float32), coordinate_crop, aligned)
        mask = paste_mask(photo.shape, aligned)
        expected = transform_points(np.stack([xs[mask], ys[mask]], axis=1), aligned.matrix)
        np.testing.assert_allclose(pasted[mask], expected, atol=1 / 32, err_msg=name)
        assert (pasted[~mask] == -1).all()


def test_paste_back_of_the_unedited_crop_reproduces_the_photo(singles):
    for name, photo, landmarks in singles:
        aligned = align_face(photo, landmarks)
        mask = paste_mask(photo.shape, aligned)
        assert mask.sum() > 0.5 * (112 / np.hypot(*aligned.matrix[0, :2])) ** 2, name
        pasted = paste_back(photo, aligned.crop, aligned)
        assert np.array_equal(pasted[~mask], photo[~mask]), f"{name}: pixels outside the mask changed"
        # A 112 crop of a 400-pixel face cannot hold all its detail: on the photo low-passed to the
        # crop's resolution the round trip is exact to within a grey level.
        sigma = 1.5 / min(np.hypot(*aligned.matrix[0, :2]), 1.0)
        smooth = cv2.GaussianBlur(photo, (0, 0), sigma)
        smooth_aligned = align_face(smooth, landmarks)
        round_trip = paste_back(smooth, smooth_aligned.crop, smooth_aligned)
        error = np.abs(round_trip[mask].astype(int) - smooth[mask]).mean()
        assert error < 1.0, f"{name}: mean error {error:.2f} grey levels"


def test_edited_crop_changes_only_pixels_inside_the_mask(singles):
    name, photo, landmarks = singles[0]
    before = photo.copy()
    aligned = align_face(photo, landmarks)
    edited = np.clip(aligned.crop.astype(int) + 10, 0, 255).astype(np.uint8)
    pasted = paste_back(photo, edited, aligned)
    mask = paste_mask(photo.shape, aligned)
    changed = (pasted != photo).any(axis=2)
    assert not (changed & ~mask).any()
    assert changed[mask].mean() > 0.95
    assert np.array_equal(photo, before), "paste_back must not modify its input"


def test_paste_back_grayscale_and_rgba(singles):
    name, photo, landmarks = singles[1]
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    aligned = align_face(gray, landmarks)
    assert aligned.crop.shape == (112, 112)
    pasted = paste_back(gray, 255 - aligned.crop, aligned)
    mask = paste_mask(gray.shape, aligned)
    assert np.array_equal(pasted[~mask], gray[~mask]) and (pasted[mask] != gray[mask]).mean() > 0.9

    alpha = np.random.default_rng(0).integers(0, 256, gray.shape, dtype=np.uint8)
    rgba = np.dstack([photo, alpha])
    aligned = align_face(rgba, landmarks)
    assert aligned.crop.shape == (112, 112, 4)
    for crop in (255 - aligned.crop, 255 - aligned.crop[..., :3]):  # RGBA or RGB edit
        pasted = paste_back(rgba, crop, aligned)
        assert np.array_equal(pasted[..., 3], alpha), "alpha must stay untouched"
        assert np.array_equal(pasted[~mask], rgba[~mask])
        assert (pasted[..., :3][mask] != rgba[..., :3][mask]).any(axis=1).mean() > 0.9


def test_paste_back_rejects_a_mismatched_crop(singles):
    name, photo, landmarks = singles[0]
    aligned = align_face(photo, landmarks)
    for crop in (aligned.crop[:100], aligned.crop.astype(np.float32), aligned.crop[..., 0]):
        with pytest.raises(ValueError):
            paste_back(photo, crop, aligned)


def test_celeba_landmark_list_feeds_alignment(tmp_path, singles):
    """A CelebA-style list (integer landmarks, as CelebA ships them) gives the same alignment as
    the detected landmarks, up to the rounding."""
    rows = {f"{k:06d}.jpg": np.rint(landmarks) for k, (_, _, landmarks) in enumerate(singles[:3])}
    lines = [str(len(rows)), "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
             "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"]
    lines += [f"{file} " + " ".join(f"{int(v):4d}" for v in points.ravel()) for file, points in rows.items()]
    listing = tmp_path / "list_landmarks_align_celeba.txt"
    listing.write_text("\n".join(lines) + "\n")
    table = read_landmark_list(listing)
    assert list(table) == list(rows)
    for (file, points), (name, photo, landmarks) in zip(table.items(), singles[:3]):
        np.testing.assert_array_equal(points, rows[file])
        eyes = transform_points(points, align_face(photo, points).matrix)
        assert eye_errors(eyes).max() < EYE_TOLERANCE_PX, name

    for broken in (lines[:1] + ["x y"] + lines[2:], ["5"] + lines[1:],
                   lines[:2] + [lines[2] + " 7"], lines[:2] + ["a.jpg" + " nan" * 10]):
        listing.write_text("\n".join(broken) + "\n")
        with pytest.raises(ValueError):
            read_landmark_list(listing)
