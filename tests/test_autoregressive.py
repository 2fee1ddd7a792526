"""Autoregressive perturbations (``autoregressive``): the AR recursion, the processes it draws, and the
shortcut it leaves in saved images.

Measured on 200 CIFAR-10 training images, crafting seeds 0-2: after 8-bit quantisation the
processes' matching filters name the class of every Δ at ε = 8 and 16 (accuracy 1.00) and of 98-100 %
at ε = 4. Over process seeds 0-2 the smallest response of a filter to another class's signal was
0.14-0.17 for 10 classes of 32x32 RGB and 0.039-0.051 for 19 gray ones (unit-RMS signals), its
response to its own signal below 1e-15.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from faceguard.attacks.autoregressive import Autoregressive, ar_generate, ar_response, find_processes
from faceguard.quantize import quantize_within


def _raster_reference(coefficients: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The recursion written as the paper states it: pixel by pixel in raster order."""
    signal = start.double().clone()
    for i in range(2, signal.shape[2]):
        for j in range(2, signal.shape[3]):
            window = signal[:, :, i - 2:i + 1, j - 2:j + 1].clone()
            window[..., 2, 2] = 0
            signal[:, :, i, j] = (window * coefficients.double()).sum((2, 3))
    return signal[:, :, 4:, 4:]


def test_ar_generate_fills_each_anti_diagonal_as_the_raster_recursion_would():
    generator = torch.Generator().manual_seed(0)
    coefficients = torch.randn(3, 2, 3, 3, generator=generator) * 0.3
    start = torch.randn(3, 2, 13, 17, generator=generator)
    filled = ar_generate(coefficients, start)
    assert filled.shape == (3, 2, 9, 13) and filled.dtype == torch.float64
    # float64 sums of a few terms of order 1: agreement to rounding
    assert torch.allclose(filled, _raster_reference(coefficients, start), rtol=0, atol=1e-12)


@pytest.mark.parametrize("classes, channels, side", [(10, 3, 32), (19, 1, 32)])
def test_processes_cancel_their_own_signal_and_answer_every_other(classes, channels, side):
    generator = torch.Generator().manual_seed(0)
    processes = find_processes(classes, channels, (side, side), generator)
    assert processes.shape == (classes, channels, 3, 3)
    assert torch.allclose(processes[..., :2, :].sum((2, 3)) + processes[..., 2, :2].sum(2),
                          torch.ones(classes, channels), atol=1e-6)
    signals = ar_generate(processes.double(), torch.randn(classes, channels, side + 4, side + 4, dtype=torch.float64))
    response = ar_response(processes.double(), signals)
    assert float(response.diagonal().max()) < 1e-12
    others = response[~torch.eye(classes, dtype=torch.bool)]
    assert float(others.min()) > 0.02, float(others.min())  # measured 0.039-0.17 over these cases and seeds 0-2
    again = find_processes(classes, channels, (side, side), torch.Generator().manual_seed(0))
    assert torch.equal(again, processes)


def test_too_few_stable_processes_is_an_error_that_says_so():
    with pytest.raises(RuntimeError, match="stable autoregressive processes"):
        find_processes(200, 3, (16, 16), torch.Generator().manual_seed(0), max_rounds=1)


def _classifier(inputs: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))


def test_saved_images_carry_their_class_in_the_delta(cifar_train_small):
    data = cifar_train_small
    x, y = data.images.float() / 255, data.labels
    attack = Autoregressive(_classifier(3 * 32 * 32, 10), eps=8)
    saved = quantize_within(attack(x, y), x, 8)
    assert attack.classes == 10 and attack.processes.shape == (10, 3, 3, 3)
    assert int((saved.int() - data.images.int()).abs().max()) <= 8
    delta = saved.double() / 255 - x.double()
    assert delta.abs().mean() > 0.1 * 8 / 255  # not vanishing: measured 0.17 ε on average
    named = ar_response(attack.processes.double(), delta).argmin(0)
    assert (named == y).float().mean() >= 0.95  # measured 1.00 for seeds 0-2
    assert torch.equal(Autoregressive(_classifier(3 * 32 * 32, 10), eps=8)(x, y), attack(x, y))


def test_every_batch_of_a_corpus_gets_the_same_processes():
    x = torch.rand(6, 1, 20, 20)
    first, second = Autoregressive(_classifier(20 * 20, 7), eps=16), Autoregressive(_classifier(20 * 20, 7), eps=16)
    first(x[:3], torch.tensor([0, 1, 2]))
    second(x[3:], torch.tensor([4, 4, 5]))  # labels seen differ; the class count is the model's
    assert torch.equal(first.processes, second.processes) and first.processes.shape == (7, 1, 3, 3)
    other = Autoregressive(_classifier(20 * 20, 7), eps=16, seed=1)
    other(x[:3], torch.tensor([0, 1, 2]))
    assert not torch.equal(other.processes, first.processes)
    with pytest.raises(ValueError, match="label 7 has no process"):
        Autoregressive(_classifier(20 * 20, 7), eps=16)(x[:1], torch.tensor([7]))
