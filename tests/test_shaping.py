"""Perceptual shaping of Δ (faceguard.shaping) and its use in the crafting engine."""
from __future__ import annotations

import pytest
import torch

from faceguard.attacks.evasion import Evade
from faceguard.quantize import quantize_within
from faceguard.regularizers import lab_penalty
from faceguard.settings import CraftSettings
from faceguard.shaping import budget_map, feather_map, project_shaped, shape_gradient, texture_budget

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
    assert torch.allclose(budget_map(textured, 0.25, 0.25), budget * fade)
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


@pytest.mark.parametrize("chroma,floor,feather", [(0.0, 1.0, 0.0), (0.25, 0.3, 0.1)])
def test_evasion_with_shaping_keeps_every_bound_after_quantisation(chroma, floor, feather):
    model = _Linear()
    x = _images(4) * 0.8 + 0.1
    people = torch.arange(3)
    anchors = [torch.nn.functional.normalize(model(x), dim=1).detach()]
    settings = CraftSettings(method="evade", eps=16, steps=12, restarts=1, step_size=0.25, augment="none",
                             chroma=chroma, budget_floor=floor, feather=feather, ensemble=("profile",), seed=5)
    attack = Evade(model, anchors, settings)
    x_adv = attack(x, people)
    delta = x_adv - x
    budget = budget_map(x, floor, feather) * RADIUS
    assert (delta.abs() <= budget + FLOAT_SLACK).all()
    assert _tint(delta).abs().max() <= chroma * RADIUS + FLOAT_SLACK
    assert torch.equal(attack(x, people), x_adv)  # seeded: the same call gives the same Δ
    pixels = quantize_within(x_adv, x, 16)
    assert ((pixels.float() - (x * 255).round()).abs() <= 16).all()
    similarity = (torch.nn.functional.normalize(model(x_adv), dim=1) * anchors[0]).sum(1)
    assert (similarity < 0.999).all()  # it did move every image's embedding
