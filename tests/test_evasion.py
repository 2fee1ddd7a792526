"""Evasion methods: untargeted evasion lowers the cosine to the person's centre, targeted evasion
raises it to the chosen far identity, both within ε, over single networks and ensembles; and on
real faces, dlib's recognizer stops matching a face evaded against it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import require_data
from faceguard.attacks import EmbeddingEnsemble, Evade, RandomNoise, Target, build_attack
from faceguard.attacks.evasion import embeddings_of, farthest_anchors, identity_centres
from faceguard.settings import CraftSettings
from faceguard.units import eps_radius

BASE = CraftSettings(method="evade", eps=16, steps=20, restarts=1, step_size=0.25, augment="none")


def tiny_embedder(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Tanh(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 16, bias=False)).eval()


@pytest.fixture(scope="module")
def faces():
    """Random 'faces' of 4 people: a person's images are noisy copies of one base image."""
    g = torch.Generator().manual_seed(0)
    bases = torch.rand(4, 3, 24, 24, generator=g)
    people = torch.arange(4).repeat_interleave(3)
    x = (bases[people] + 0.05 * torch.randn(12, 3, 24, 24, generator=g)).clamp(0, 1)
    return x, people


@pytest.mark.parametrize("ensemble", [False, True])
def test_evade_moves_every_embedding_away_from_its_centre(faces, ensemble):
    """Every image's cosine to its centre falls by over 10x what random ±ε noise moves it (seeds
    0-5 of these networks measured 36-93x at worst)."""
    x, people = faces
    model = EmbeddingEnsemble([tiny_embedder(0), tiny_embedder(1)]) if ensemble else tiny_embedder(0)
    centres = identity_centres(model, x, people)
    atk = Evade(model, centres, BASE)
    x_adv = atk(x, people)
    assert (x_adv - x).abs().max() <= eps_radius(16) + 1e-6
    with torch.no_grad():
        before, after = atk.similarity(x, people), atk.similarity(x_adv, people)
        noise = (before - atk.similarity(RandomNoise(model, BASE)(x, people), people)).abs()
    assert (before - after > 10 * noise).all(), (before - after, noise)
    for clean, moved, centre in zip(embeddings_of(model, x), embeddings_of(model, x_adv), centres):
        assert ((moved * centre[people]).sum(1) < (clean * centre[people]).sum(1)).all()  # every member


def test_target_pulls_embeddings_toward_the_far_identity(faces):
    x, people = faces
    model = tiny_embedder(2)
    centres = identity_centres(model, x, people)
    targets, choice = farthest_anchors(centres, centres)
    assert (choice != torch.arange(4)).all()  # the farthest identity is never one's own
    atk = build_attack(model, BASE.replace(method="target"), targets)
    assert isinstance(atk, Target)
    x_adv = atk(x, people)
    before, after = -atk.loss(x, people, x), -atk.loss(x, people, x_adv)
    assert (after > before).all(), (before, after)
    nearest = (embeddings_of(model, x_adv)[0] @ centres[0].T).argmax(1)
    assert (nearest == choice[people]).float().mean() >= 0.5


def test_evasion_is_seeded_and_per_image(faces):
    """Same seed, same result; the restart kept for each image is that image's best."""
    x, people = faces
    model = tiny_embedder(3)
    centres = identity_centres(model, x, people)
    settings = BASE.replace(steps=3, restarts=3, augment="scraper", seed=5)
    a, b = Evade(model, centres, settings)(x, people), Evade(model, centres, settings)(x, people)
    assert torch.equal(a, b)
    atk = Evade(model, centres, settings)
    atk(x, people)
    losses = torch.stack(atk.report.restart_losses)
    assert losses.shape == (3, 12) and torch.equal(atk.report.best_loss, losses.min(0).values)


def test_ensemble_input_maps_and_anchor_count_are_checked(faces):
    x, people = faces
    resize = lambda images: F.interpolate(images, size=32, mode="bilinear", align_corners=False)  # noqa: E731
    model = EmbeddingEnsemble([tiny_embedder(0), tiny_embedder(1)], [None, resize])
    assert [e.shape for e in model(x)] == [(12, 16), (12, 16)]
    with pytest.raises(ValueError, match="input maps"):
        EmbeddingEnsemble([tiny_embedder(0)], [None, None])
    atk = Evade(model, identity_centres(tiny_embedder(0), x, people), BASE)
    with pytest.raises(ValueError, match="anchor sets"):
        atk(x, people)


def test_dlib_no_longer_matches_a_face_evaded_against_it(dlib_recognizer):
    """White-box on real photos: 4 faces of 2 people (dlib chips from MTCNN points), ε = 8, 15
    steps; every evaded chip's descriptor leaves the 0.6 same-person radius of its clean self."""
    from recognition.detection import FaceDetector
    from recognition.face_chip import mtcnn_face_chip
    from recognition.files import load_rgb
    from recognition.models.dlib_resnet import SAME_PERSON_THRESHOLD

    root = require_data("photos")
    names = ("obama/obama.jpg", "obama/obama2.jpg", "biden/biden.jpg", "biden/biden2.jpg")
    detector = FaceDetector(device="cpu")
    chips = []
    for name in names:
        image = load_rgb(root / name)
        chips.append(mtcnn_face_chip(image, detector.detect(image, min_face_size=100)[0].landmarks))
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255
    people = torch.tensor([0, 0, 1, 1])
    model = dlib_recognizer
    atk = Evade(model, identity_centres(model, x, people), BASE.replace(eps=8, steps=15))
    x_adv = atk(x, people)
    with torch.no_grad():
        moved = (model(x_adv) - model(x)).norm(dim=1)
    assert (moved > SAME_PERSON_THRESHOLD).all(), moved
