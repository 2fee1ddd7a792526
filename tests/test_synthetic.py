"""Synthetic shortcut noise (``synthetic``): the block patterns, their class structure after saving,
seeding, and the shortcut a classifier trained on them learns instead of the images."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from faceguard.attacks import SyntheticNoise
from faceguard.attacks.synthetic import block_patterns
from faceguard.quantize import quantize_within


def _classifier(inputs: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))


def _patterns(grid: int, mirror: bool, size=(32, 32), classes: int = 6, seed: int = 0,
              channels: int = 3) -> torch.Tensor:
    return block_patterns(classes, channels, size, torch.Generator().manual_seed(seed), grid, mirror)


def test_patterns_are_signs_constant_on_blocks_and_mirrored():
    patterns = _patterns(8, mirror=True)
    assert patterns.shape == (6, 3, 32, 32) and set(patterns.unique().tolist()) == {-1.0, 1.0}
    cells = patterns[..., ::4, ::4]
    assert torch.equal(patterns, cells.repeat_interleave(4, -2).repeat_interleave(4, -1))
    assert torch.equal(patterns, patterns.flip(-1))
    assert not torch.equal(patterns, patterns.flip(-2))  # mirrored left-right only
    free = _patterns(8, mirror=False)
    assert not torch.equal(free, free.flip(-1))
    odd = _patterns(5, mirror=True, size=(23, 30))
    assert odd.shape == (6, 3, 23, 30) and torch.equal(odd, odd.flip(-1))
    with pytest.raises(ValueError, match="at least 2 cells"):
        _patterns(1, mirror=True)


def test_classes_get_orthogonal_patterns():
    """Each channel's free cells (8 x 4 of a mirrored 8 x 8 grid) are randomised Hadamard rows: any
    two classes agree on exactly half of them while there are at most 32 classes, and on about half
    beyond."""
    for channels, classes in ((1, 19), (3, 10), (1, 32)):
        patterns = _patterns(8, mirror=True, classes=classes, seed=channels, channels=channels)
        free = patterns[:, :, ::4, ::4][..., :4].flatten(2)  # [K, C, 32]
        for c in range(channels):
            agreement = free[:, c] @ free[:, c].T / 32
            assert torch.equal(agreement, torch.eye(classes)), (channels, classes)
    many = _patterns(8, mirror=True, classes=40).flatten(1)
    off = (many @ many.T / many.shape[1])[~torch.eye(40, dtype=torch.bool)]
    assert off.abs().max() <= 0.5 and not torch.equal(many, _patterns(8, mirror=True, classes=40, seed=1).flatten(1))


def test_saved_images_carry_their_class_pattern(cifar_train_small):
    x, y = cifar_train_small.images.float() / 255, cifar_train_small.labels
    attack = SyntheticNoise(_classifier(3 * 32 * 32, 10), eps=8)
    saved = quantize_within(attack(x, y), x, 8)
    assert attack.classes == 10 and attack.patterns.shape == (10, 3, 32, 32)
    assert int((saved.int() - cifar_train_small.images.int()).abs().max()) == 8
    delta = saved.double() / 255 - x.double()
    named = torch.einsum("nchw,kchw->nk", delta, attack.patterns.double()).argmax(1)
    assert torch.equal(named, y)
    unclipped = ((x + attack.patterns[y] * 8 / 255) >= 0) & ((x + attack.patterns[y] * 8 / 255) <= 1)
    assert (delta - attack.patterns[y].double() * 8 / 255).abs()[unclipped].max() < 0.5 / 255 + 1e-9


def test_batches_and_runs_with_one_seed_share_the_patterns():
    x = torch.rand(6, 1, 20, 20)
    first, second = SyntheticNoise(_classifier(400, 7), eps=16), SyntheticNoise(_classifier(400, 7), eps=16)
    first(x[:3], torch.tensor([0, 1, 2]))
    second(x[3:], torch.tensor([4, 4, 5]))  # labels seen differ; the class count is the model's
    assert torch.equal(first.patterns, second.patterns) and first.patterns.shape == (7, 1, 20, 20)
    other = SyntheticNoise(_classifier(400, 7), eps=16, seed=1)
    other(x[:3], torch.tensor([0, 1, 2]))
    assert not torch.equal(other.patterns, first.patterns)
    with pytest.raises(ValueError, match="label 7 has no pattern"):
        SyntheticNoise(_classifier(400, 7), eps=16)(x[:1], torch.tensor([7]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        SyntheticNoise(_classifier(400, 7), eps=16, classes=1)


def test_a_classifier_trained_on_the_noise_follows_the_pattern_not_the_image(cifar_tar, cifar_train_small):
    """The shortcut: a linear classifier trained on 200 CIFAR-10 images perturbed at ε = 16 names
    held-out images by the pattern they carry. Given held-out images carrying the *next* class's
    pattern, it answers that class for 85-88 % of them (seeds 0-2, measured), where one trained on
    the clean images answers it by chance (8-9 %)."""
    from recognition.datasets import load_cifar10

    held = load_cifar10(cifar_tar, "test", per_class=20)
    x, y = cifar_train_small.images.float() / 255, cifar_train_small.labels
    xh, yh = held.images.float() / 255, held.labels
    for seed in range(2):
        attack = SyntheticNoise(_classifier(3 * 32 * 32, 10), eps=16, seed=seed)
        poisoned = quantize_within(attack(x, y), x, 16).float() / 255
        swapped = (xh + attack.patterns[(yh + 1) % 10] * 16 / 255).clamp(0, 1)
        for images, at_least, at_most in ((poisoned, 0.6, 1.0), (x, 0.0, 0.25)):
            torch.manual_seed(seed)
            model = _classifier(3 * 32 * 32, 10)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            for _ in range(10):
                for index in torch.randperm(len(images)).split(50):
                    loss = nn.functional.cross_entropy(model(images[index] - 0.5), y[index])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            with torch.no_grad():
                follows = (model(swapped - 0.5).argmax(1) == (yh + 1) % 10).float().mean()
            assert at_least <= follows <= at_most, (seed, float(follows))
