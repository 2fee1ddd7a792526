"""Perceptual shaping of Δ (faceguard.shaping) and its use in the crafting engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceguard.attacks.evasion import Evade
from faceguard.quantize import quantize_within
from faceguard.regularizers import lab_penalty
from faceguard.settings import CraftSettings
from conftest import require_data
from faceguard.shaping import feather_map, project_shaped, shape_gradient, texture_budget

RADIUS = 16 / 255
FLOAT_SLACK = 1e-6  # float32 rounding of values near 0.06


def _images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, 24, 24, generator=g)


def _tint(delta: torch.Tensor) -> torch.Tensor:
    return delta - delta.mean(1, keepdim=True)


@pytest.mark.parametrize("chroma", [0.0, 0.25, 0.5])
def test_projection_respects_eps_colour_budget_and_range(chroma):
    x = _images() * 0.8 + 0.1  # tints stay representable away from 0 and 1
    delta = (torch.rand_like(x) * 2 - 1) * 3 * RADIUS
    shaped = project_shaped(x, delta, RADIUS, chroma)
    assert shaped.abs().max() <= RADIUS + FLOAT_SLACK
    assert _tint(shaped).abs().max() <= chroma * RADIUS + FLOAT_SLACK
    assert ((x + shaped) >= 0).all() and ((x + shaped) <= 1).all()
    again = project_shaped(x, shaped, RADIUS, chroma)
    assert torch.allclose(again, shaped, atol=FLOAT_SLACK)  # a projection: idempotent


def test_grey_projection_stays_grey_at_saturated_pixels():
    x = _images(1)  # pixels down to 0 and up to 1
    shaped = project_shaped(x, (torch.rand_like(x) * 2 - 1) * RADIUS, RADIUS, 0.0)
    assert _tint(shaped).abs().max() <= FLOAT_SLACK
    assert ((x + shaped) >= 0).all() and ((x + shaped) <= 1).all()


def test_unshaped_projection_is_the_plain_clamp():
    x = _images(2)
    delta = (torch.rand_like(x) * 2 - 1) * 2 * RADIUS
    assert torch.equal(project_shaped(x, delta, RADIUS, 1.0), (x + delta.clamp(-RADIUS, RADIUS)).clamp(0, 1) - x)


def test_budget_map_is_large_on_texture_small_on_flat_areas():
    flat = torch.full((1, 3, 32, 32), 0.5)
    textured = flat.clone()
    textured[..., :, 16:] += 0.2 * (torch.arange(16) % 2).float()  # stripes on the right half
    budget = texture_budget(textured, 0.25)
    assert budget[..., :, :8].max() == pytest.approx(0.25) and budget[..., :, 20:].min() == pytest.approx(1.0)
    assert torch.equal(texture_budget(textured, 1.0), torch.ones(1, 1, 32, 32))
    fade = feather_map(32, 32, 0.25)
    assert fade[0, 0, 0, 0] < 0.01 and fade[0, 0, 16, 16] == 1.0 and fade.shape == (1, 1, 32, 32)
    assert torch.equal(feather_map(8, 8, 0.0), torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError):
        texture_budget(flat, 1.5)


def test_shaped_gradient_steps_grey_when_chroma_is_zero():
    grad = torch.randn(2, 3, 8, 8)
    assert _tint(shape_gradient(grad, 0.0).sign()).abs().max() == 0
    assert torch.equal(shape_gradient(grad, 1.0), grad)


def test_lab_penalty_sees_colour_and_is_zero_without_change():
    x = torch.full((1, 3, 16, 16), 0.5)
    tint = torch.zeros_like(x)
    tint[:, 1] = 8 / 255
    assert lab_penalty(x, torch.zeros_like(x)).item() < 1e-5
    assert lab_penalty(x, tint).item() > 5 * lab_penalty(x, torch.zeros_like(x)).item()
    tint.requires_grad_(True)
    lab_penalty(x, tint).sum().backward()
    assert torch.isfinite(tint.grad).all()


class _Linear(torch.nn.Module):
    """A fixed linear 'recognizer' over the pixels (enough to drive evasion)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(8, 3 * 24 * 24, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


@pytest.mark.parametrize("chroma", [0.0, 0.25])
def test_evasion_with_a_colour_bound_keeps_every_bound_after_quantisation(chroma):
    model = _Linear()
    x = _images(4) * 0.8 + 0.1
    people = torch.arange(3)
    anchors = [torch.nn.functional.normalize(model(x), dim=1).detach()]
    settings = CraftSettings(method="evade", eps=16, steps=12, restarts=1, step_size=0.25, augment="none",
                             chroma=chroma, ensemble=("profile",), seed=5)
    attack = Evade(model, anchors, settings)
    x_adv = attack(x, people)
    delta = x_adv - x
    assert delta.abs().max() <= RADIUS + FLOAT_SLACK
    assert _tint(delta).abs().max() <= chroma * RADIUS + FLOAT_SLACK
    assert torch.equal(attack(x, people), x_adv)  # seeded: the same call gives the same Δ
    pixels = quantize_within(x_adv, x, 16)
    assert ((pixels.float() - (x * 255).round()).abs() <= 16).all()
    similarity = (torch.nn.functional.normalize(model(x_adv), dim=1) * anchors[0]).sum(1)
    assert (similarity < 0.999).all()  # it did move every image's embedding


def test_shaped_photo_is_grey_within_the_budget_map_and_the_bound():
    """faceguard protect with every shaping on a real photo: grey changes (channels within one
    level of each other after 8-bit rounding, where no channel is clamped at 0 or 255), at most floor · ε (+1 for rounding) on flat areas
    inside the face, ε everywhere, nothing outside the face region."""
    from faceguard.protect.protector import Protector
    from faceguard.protect.warp import as_channels_first
    from recognition.files import load_rgb

    photo = load_rgb(require_data("photos") / "obama" / "obama.jpg")
    photo = np.ascontiguousarray(photo[::2, ::2])  # half size: faster, the face stays large
    floor = 0.25
    protector = Protector(method="evade", eps=16, steps=3, chroma=0.0, budget_floor=floor, feather=0.1, grid=96,
                          ensemble=("profile",), device="cpu")
    result = protector.protect(photo, measure=False)
    diff = result.image.astype(int) - photo.astype(int)
    assert 0 < np.abs(diff).max() <= 16
    inside_range = ((photo >= 16) & (photo <= 239)).all(axis=2)  # no channel clamped at black or white
    assert (diff.max(axis=2) - diff.min(axis=2))[inside_range].max() <= 1  # grey
    budget = texture_budget(as_channels_first(photo)[None], floor)[0, 0].numpy()
    x0, y0, x1, y1 = (int(v) for v in result.faces[0].box)
    inner = np.zeros(budget.shape, dtype=bool)
    inner[y0 + 8:y1 - 8, x0 + 8:x1 - 8] = True
    change = np.abs(diff).max(axis=2)
    # pixel by pixel within its budget (+1 for the 8-bit rounding of each side)
    assert (change[inner] <= budget[inner] * 16 + 1).all()
    low = float(np.quantile(budget[inner], 0.2))  # the flattest fifth of the face
    assert low < 0.6
    assert change[inner & (budget <= low)].max() <= low * 16 + 1 < change[inner & (budget == 1)].max()
