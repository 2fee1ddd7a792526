"""Crafting on a surrogate trained briefly on real CIFAR-10 images: it must work, not just run."""
import pytest

from faceguard.attacks import Alignment, RandomNoise
from faceguard.gradients import target_gradient
from faceguard.settings import CraftSettings

BASE = CraftSettings(eps=8, augment=False, backend="double")


@pytest.fixture(scope="module")
def protected_setup(cifar_surrogate):
    model, train = cifar_surrogate
    target = target_gradient(model, train, batch_size=256)
    x = train.images[:32].float() / 255
    return model, target, x, train.labels[:32]


@pytest.mark.parametrize("variant", ["joint", "independent"])
def test_crafting_lowers_alignment_loss_clearly_below_a_random_start(protected_setup, variant):
    """The batch alignment A (Eq. 3) falls far below its random-start value for both variants.

    The random start's A depends on the briefly trained surrogate, whose training the CPU kernels and
    thread count steer (measured 0.35-1.08 over surrogate seeds 0-3 on one and two threads of an
    AVX-512 CPU), so the bounds are on what 40 steps reach there: joint A 0.11-0.28 (at most 0.41 of
    its start); the independent variant, which lowers each image's own loss 1 − cos(T, g_i), takes
    the batch A to 0.16-0.32 (at most 0.77 of its start) and its mean per-image loss down by
    0.11-0.24 (one image's gradient is dominated by directions of its own, while their sum aligns).
    """
    model, target, x, y = protected_setup
    batch_loss = Alignment(model, target, BASE, steps=0, restarts=1, variant="joint")
    atk = Alignment(model, target, BASE, steps=40, restarts=1, variant=variant)
    random_start = RandomNoise(model, BASE)(x, y)
    x_adv = atk(x, y)
    start, final = batch_loss.loss(x, y, random_start), batch_loss.loss(x, y, x_adv)
    if variant == "joint":
        assert final < min(0.6 * start, 0.35), (float(start), float(final))
    else:
        assert final < min(start, 0.4), (float(start), float(final))
        assert atk.loss(x, y, x_adv).mean() < atk.loss(x, y, random_start).mean() - 0.06
    trace = atk.report.step_losses[0]
    assert trace[-1] < trace[0]


@pytest.mark.parametrize("variant", ["joint", "independent"])
def test_more_restarts_never_give_a_higher_final_loss(protected_setup, variant):
    model, target, x, y = protected_setup
    x, y = x[:16], y[:16]
    best = []
    for restarts in (1, 3):
        atk = Alignment(model, target, BASE, steps=5, restarts=restarts, variant=variant, seed=3)
        atk(x, y)
        best.append(atk.report.best_loss)
    assert (best[1] <= best[0]).all()
    assert best[1].shape == (() if variant == "joint" else (16,))
