"""Tests for the face-recognition heads: margin formulas and exact first/second-order gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

from recognition.heads import ArcFace, CosFace, MarginClassifier, SoftmaxHead, create_head

HEADS = ["cosface", "arcface", "softmax"]


def _cosines(head: nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings, dim=1) @ F.normalize(head.weight, dim=1).T


def _target_mask(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels, num_classes).bool()


def test_cosface_logits() -> None:
    torch.manual_seed(0)
    head, emb, labels = CosFace(8, 5, s=30.0, m=0.35), torch.randn(6, 8), torch.randint(0, 5, (6,))
    cos, mask = _cosines(head, emb), _target_mask(labels, 5)
    expected = torch.where(mask, 30.0 * (cos - 0.35), 30.0 * cos)
    assert torch.allclose(head(emb, labels), expected, atol=1e-5)
    assert torch.allclose(head(emb), 30.0 * cos, atol=1e-5)


def test_arcface_logits() -> None:
    torch.manual_seed(0)
    head, emb, labels = ArcFace(8, 5, s=64.0, m=0.5), torch.randn(6, 8), torch.randint(0, 5, (6,))
    cos, mask = _cosines(head, emb), _target_mask(labels, 5)
    assert (torch.acos(cos[mask]) + 0.5 < math.pi).all()  # margin branch, not the fallback
    expected = torch.where(mask, 64.0 * torch.cos(torch.acos(cos) + 0.5), 64.0 * cos)
    assert torch.allclose(head(emb, labels), expected, atol=1e-4)
    assert torch.allclose(head(emb), 64.0 * cos, atol=1e-4)


def test_arcface_fallback_and_poles() -> None:
    """θ + m > π uses cos θ - m sin m; cos = ±1 exactly gives finite gradients."""
    head = ArcFace(4, 2, s=1.0, m=0.5)
    labels = torch.tensor([0, 1])
    emb = torch.stack([-head.weight[0], head.weight[1]]).detach().requires_grad_(True)  # cos = -1, +1
    logits = head(emb, labels)
    assert torch.allclose(logits[0, 0], torch.tensor(-1.0 - 0.5 * math.sin(0.5)), atol=1e-5)
    # The clamp of cos to 1 - 1e-7 costs ~sqrt(2e-7) * sin(m) in float32 at the pole.
    assert torch.allclose(logits[1, 1], torch.tensor(math.cos(0.5)), atol=1e-3)
    grads = torch.autograd.grad(logits.sum(), [emb, head.weight])
    assert all(torch.isfinite(g).all() for g in grads)


def test_softmax_head_is_linear() -> None:
    head, emb = SoftmaxHead(8, 5), torch.randn(3, 8)
    assert torch.allclose(head(emb, torch.tensor([0, 1, 2])), head.linear(emb))


def test_create_head() -> None:
    assert isinstance(create_head("arcface", 8, 5, m=0.3), ArcFace)
    assert create_head("cosface", 8, 5, s=10.0).s == 10.0
    with pytest.raises(ValueError, match="cosface"):
        create_head("sphereface", 8, 5)


@pytest.mark.parametrize("name", HEADS)
def test_head_gradcheck_and_gradgradcheck(name: str) -> None:
    torch.manual_seed(0)
    head = create_head(name, 4, 3).double()
    names = [n for n, _ in head.named_parameters()]
    labels = torch.tensor([0, 2, 1, 2])

    def fn(embeddings: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return functional_call(head, dict(zip(names, params)), (embeddings, labels))

    inputs = (torch.randn(4, 4, dtype=torch.float64, requires_grad=True),
              *(p.detach().clone().requires_grad_(True) for p in head.parameters()))
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("name", HEADS)
def test_double_backprop_matches_finite_differences(name: str) -> None:
    """∇_x <∇_θ L(x), v> by double backprop equals central differences of the first-order gradient."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(16, 6))
    model = MarginClassifier(backbone, create_head(name, 6, 3, **({"s": 8.0} if name != "softmax" else {})))
    model = model.double()
    params = list(model.parameters())
    labels = torch.tensor([0, 2])
    directions = [torch.randn_like(p) for p in params]

    def grad_dot_v(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
        loss = F.cross_entropy(model(x, labels), labels)
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        return sum((g * v).sum() for g, v in zip(grads, directions))

    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    (analytic,) = torch.autograd.grad(grad_dot_v(x, create_graph=True), x)

    eps = 1e-6
    numeric = torch.zeros_like(x)
    for i in range(x.numel()):
        step = torch.zeros_like(x)
        step.view(-1)[i] = eps
        numeric.view(-1)[i] = (grad_dot_v(x + step, False) - grad_dot_v(x - step, False)) / (2 * eps)
    assert analytic.abs().sum() > 0
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)
