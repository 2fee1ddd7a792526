"""Reverse cross-entropy and the pluggable loss interface."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from faceguard.losses import make_loss, reverse_cross_entropy, reverse_cross_entropy_from_logits


def test_reverse_ce_matches_definition_in_float64():
    logits = torch.randn(7, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    naive = -torch.log(1 - F.softmax(logits, 1)[torch.arange(7), y])
    assert torch.allclose(reverse_cross_entropy_from_logits(logits, y), naive, atol=1e-12)


def test_reverse_ce_is_stable_when_the_label_dominates():
    logits = torch.tensor([[80.0, 0.0, -3.0], [0.0, 200.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    loss = reverse_cross_entropy_from_logits(logits, y)
    assert torch.isfinite(loss).all() and (loss > 70).all()
    (g,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(g).all()


def test_reverse_ce_uses_each_samples_own_label():
    logits = torch.randn(6, 4)
    y = torch.tensor([3, 0, 2, 1, 1, 3])
    batch = reverse_cross_entropy_from_logits(logits, y)
    single = torch.stack([reverse_cross_entropy_from_logits(logits[i:i + 1], y[i:i + 1])[0] for i in range(6)])
    assert torch.allclose(batch, single)
    assert not torch.allclose(batch, reverse_cross_entropy_from_logits(logits, y.roll(1)))


def test_reverse_ce_rejects_a_single_class():
    with pytest.raises(ValueError):
        reverse_cross_entropy_from_logits(torch.randn(2, 1), torch.zeros(2, dtype=torch.long))


class LabelledModel(nn.Module):
    """Adds a margin at the label, like a CosFace head: the forward pass needs y."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, y=None):
        logits = self.fc(x)
        return logits if y is None else logits - 2.0 * F.one_hot(y, 3)


def test_make_loss_passes_labels_to_the_forward_when_asked():
    model, x, y = LabelledModel(), torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    plain = make_loss("ce")(model, x, y)
    margin = make_loss("ce", label_in_forward=True)(model, x, y)
    assert plain.shape == margin.shape == (5,)
    assert (margin > plain).all()
    assert torch.allclose(make_loss("rce")(model, x, y), reverse_cross_entropy(model, x, y))
    with pytest.raises(ValueError):
        make_loss("mse")
