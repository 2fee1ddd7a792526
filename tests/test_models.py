"""Tests for the CIFAR model zoo: registry, shapes, width scaling and double backprop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recognition.models import Normalize, create_model, list_models

MODELS = list_models(pretrained=False)


def test_expected_models_registered() -> None:
    assert {"resnet18", "resnet34", "vgg19", "googlenet", "densenet121", "mobilenetv2"} <= set(MODELS)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        create_model("no-such-net")


@pytest.mark.parametrize("name", MODELS)
def test_logit_shape_and_other_input_size(name: str) -> None:
    model = create_model(name, num_classes=7, width=0.25).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)
        assert model(torch.rand(1, 3, 48, 48)).shape == (1, 7)


@pytest.mark.parametrize("name", MODELS)
def test_width_changes_parameter_count(name: str) -> None:
    def count(width: float) -> int:
        return sum(p.numel() for p in create_model(name, width=width).parameters())

    assert count(0.125) < count(0.25)


@pytest.mark.parametrize("name", MODELS)
def test_no_inplace_activations(name: str) -> None:
    model = create_model(name, width=0.125)
    assert not any(getattr(module, "inplace", False) for module in model.modules())


@pytest.mark.parametrize("name", MODELS)
def test_double_backprop_eval(name: str) -> None:
    """d/dx of ||dL/dθ||² must be finite and non-zero (what gradient matching differentiates)."""
    torch.manual_seed(0)
    model = create_model(name, width=0.125).eval()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = F.cross_entropy(model(x), torch.tensor([3]))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    (grad_x,) = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), x)
    assert torch.isfinite(grad_x).all()
    assert grad_x.abs().sum() > 0


def test_normalize_uses_buffers_and_overrides() -> None:
    model = create_model("resnet18", width=0.125, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    norm = next(m for m in model.modules() if isinstance(m, Normalize))
    assert {name for name, _ in norm.named_buffers()} == {"mean", "std"}
    assert not list(norm.parameters())
    out = norm(torch.full((1, 3, 2, 2), 0.75))
    assert torch.allclose(out, torch.ones_like(out))
    default = Normalize()
    assert torch.allclose(default.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))


def test_in_channels() -> None:
    model = create_model("vgg11", num_classes=3, width=0.125, in_channels=1).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError):
        create_model("resnet18", in_channels=1, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))


def test_pretrained_recognizers_are_listed_apart_from_the_architectures():
    assert "dlib-resnet" in list_models(pretrained=True)
    assert "dlib-resnet" not in list_models(pretrained=False)
    assert set(list_models()) == set(list_models(pretrained=True)) | set(list_models(pretrained=False))
