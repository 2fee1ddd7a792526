"""Tests for the IR-ResNet face backbones: registry defaults, shapes, width, and exact second-order
gradients (what gradient-alignment crafting differentiates) through every backbone x head pair."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recognition.heads import MarginClassifier, create_head
from recognition.models import create_model, list_models

FACE_BACKBONES = ["ir18", "ir34", "ir50"]
HEADS = ["cosface", "arcface", "softmax"]


def test_face_backbones_registered_with_their_own_default() -> None:
    assert set(FACE_BACKBONES) <= set(list_models())
    with torch.no_grad():
        assert create_model("ir18", width=0.125).eval()(torch.rand(2, 3, 112, 112)).shape == (2, 512)
        assert create_model("resnet18", width=0.125).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert create_model("ir18", num_classes=128, width=0.125).eval()(torch.rand(2, 3, 112, 112)).shape == (2, 128)


@pytest.mark.parametrize("name", FACE_BACKBONES)
def test_embedding_shape_at_112_and_64(name: str) -> None:
    with torch.no_grad():
        assert create_model(name, width=0.125).eval()(torch.rand(2, 3, 112, 112)).shape == (2, 512)
        small = create_model(name, width=0.125, input_size=64, in_channels=1).eval()
        assert small(torch.rand(2, 1, 64, 64)).shape == (2, 512)
        assert small.output[4].in_features == 64 * 4 * 4  # Linear sized for the 4x4 final map


@pytest.mark.parametrize("name", FACE_BACKBONES)
def test_width_scales_channels_not_embedding(name: str) -> None:
    def count(width: float) -> int:
        return sum(p.numel() for p in create_model(name, width=width, input_size=32).parameters())

    assert count(0.0625) < count(0.125)
    assert create_model(name, width=0.0625, input_size=32).output[-1].num_features == 512


def test_input_size_must_be_a_multiple_of_16() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        create_model("ir18", width=0.125, input_size=100)


def test_no_inplace_ops_and_prelu_activations() -> None:
    model = create_model("ir50", width=0.0625)
    assert not any(getattr(module, "inplace", False) for module in model.modules())
    assert any(isinstance(module, torch.nn.PReLU) for module in model.modules())
    assert not any(isinstance(module, torch.nn.ReLU) for module in model.modules())


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial eval-mode statistics, so the test does not pass by BN being the identity."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.normal_(module.bias, 0.0, 0.1)


@pytest.mark.parametrize("head_name", HEADS)
@pytest.mark.parametrize("name", FACE_BACKBONES)
def test_double_backprop_matches_finite_differences(name: str, head_name: str) -> None:
    """d/dΔ ⟨u, ∇θ CE(head(backbone(x + Δ), y), y)⟩ by double backprop vs central differences.

    Float64, eval mode, h = 1e-6 along unit directions. PReLU and ArcFace's branch are piecewise
    smooth; with random inputs no kink lies within ~1e-8 of a pre-activation, so the central
    difference is exact up to O(h²) truncation and ~1e-10 relative rounding. Tolerance:
    |analytic - numeric| <= 1e-6 * max(1, ‖∇Δ f‖).
    """
    torch.manual_seed(0)
    backbone = create_model(name, num_classes=16, width=0.0625, input_size=32)
    _randomise_batchnorm(backbone)
    model = MarginClassifier(backbone, create_head(head_name, 16, 5)).double().eval()
    params = [p for p in model.parameters() if p.requires_grad]
    u = [torch.randn_like(p) for p in params]
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([1, 3])

    def f(images: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        loss = F.cross_entropy(model(images, y), y)
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        return sum((g * v).sum() for g, v in zip(grads, u))

    x_var = x.clone().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(f(x_var, create_graph=True), x_var)
    scale = max(1.0, float(grad_x.norm()))
    assert float(grad_x.norm()) > 0
    h = 1e-6
    for _ in range(3):
        direction = torch.randn_like(x)
        direction /= direction.norm()
        analytic = float((grad_x * direction).sum())
        numeric = float(f(x + h * direction) - f(x - h * direction)) / (2 * h)
        assert abs(analytic - numeric) <= 1e-6 * scale, (analytic, numeric)
