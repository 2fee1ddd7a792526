"""Every crafting method: ε-ball and pixel range (before and after 8-bit quantisation), seeding,
restart selection, eval-mode handling, margin-head models, regularisers and augmentation."""
import pytest
import torch
from torch.utils.data import TensorDataset

from faceguard.attacks import (AdversarialPoison, Alignment, Autoregressive, RandomNoise, SyntheticNoise, TensorClog,
                               Unlearnable, build_attack)
from faceguard.attacks.evasion import EmbeddingAttack
from faceguard.gradients import target_gradient
from faceguard.losses import make_loss
from faceguard.quantize import quantize_within, to_uint8
from faceguard.registry import METHODS
from faceguard.settings import CraftSettings
from faceguard.units import check_eps, eps_radius
from recognition.heads import CosFace, MarginClassifier
from recognition.models import create_model

EPS = 8  # pixel levels
RADIUS = eps_radius(EPS)
# plain PGD on the exact gradient, unless a test asks for more
BASE = CraftSettings(eps=EPS, augment=False, backend="double")


@pytest.fixture(scope="module")
def setup(cifar_test_batch):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, width=0.125).eval()
    x, y = cifar_test_batch
    x, y = x[:12], y[:12]
    target = target_gradient(model, TensorDataset(*cifar_test_batch), batch_size=16)
    return model, target, x, y


def methods(model, target, **kw):
    return {
        "alignment-joint": Alignment(model, target, BASE, variant="joint", **kw),
        "alignment-independent": Alignment(model, target, BASE, variant="independent", **kw),
        "tensorclog": TensorClog(model, BASE, **kw),
        "unlearnable": Unlearnable(model, BASE, **kw),
        "adversarial": AdversarialPoison(model, BASE, **kw),
    }


def test_every_method_respects_the_eps_ball_and_pixel_range(setup):
    model, target, x, y = setup
    attacks = methods(model, target, steps=3, restarts=2) | {"random": RandomNoise(model, eps=EPS),
                                                              "autoregressive": Autoregressive(model, eps=EPS),
                                                              "synthetic": SyntheticNoise(model, eps=EPS)}
    for name, atk in attacks.items():
        x_adv = atk(x, y)
        assert x_adv.shape == x.shape, name
        assert (x_adv - x).abs().max() <= RADIUS + 1e-6, name
        assert x_adv.min() >= 0 and x_adv.max() <= 1, name
        assert (x_adv - x).abs().max() > RADIUS / 2, name  # it did perturb
        for q in (to_uint8(x_adv), quantize_within(x_adv, x, EPS)):
            diff = (q.int() - to_uint8(x).int()).abs().max()
            assert diff <= 8, name


def test_quantize_within_holds_the_bound_for_images_off_the_8bit_grid():
    """Half-way pixel values round half-to-even: with an odd ε, x and x + ε can round apart by ε + 1."""
    x = ((torch.arange(240, dtype=torch.float64) + 0.5) / 255).float().view(1, 1, 16, 15)
    x_adv = (x + eps_radius(7)).clamp(0, 1)
    naive = (to_uint8(x_adv).int() - to_uint8(x).int()).abs().max()
    exact = (quantize_within(x_adv, x, 7).int() - to_uint8(x).int()).abs().max()
    assert naive == 8 and exact == 7


def test_same_seed_gives_identical_perturbations(setup):
    model, target, x, y = setup
    for atk_a, atk_b, atk_c in zip(*(methods(model, target, steps=2, restarts=1, augment=True, seed=s).values()
                                     for s in (7, 7, 8))):
        a, b, c = atk_a(x, y), atk_b(x, y), atk_c(x, y)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
    assert torch.equal(RandomNoise(model, eps=EPS, seed=1)(x, y), RandomNoise(model, eps=EPS, seed=1)(x, y))
    for method in (Autoregressive, SyntheticNoise):
        seeded = [method(model, eps=EPS, seed=s)(x, y) for s in (1, 1, 2)]
        assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2]), method.name


def test_global_rng_is_left_alone(setup):
    model, target, x, y = setup
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Alignment(model, target, BASE, steps=1, restarts=1)(x, y)
    assert torch.equal(torch.rand(3), expected)


def test_best_restart_is_kept_per_batch_or_per_image(setup):
    model, target, x, y = setup
    joint = Alignment(model, target, BASE, steps=2, restarts=3)
    joint(x, y)
    losses = torch.stack(joint.report.restart_losses)
    assert losses.shape == (3,) and joint.report.best_loss == losses.min()
    indep = Alignment(model, target, BASE, steps=2, restarts=3, variant="independent")
    x_adv = indep(x, y)
    losses = torch.stack(indep.report.restart_losses)
    assert losses.shape == (3, len(x))
    assert torch.equal(indep.report.best_loss, losses.min(0).values)
    # the returned images are the ones the reported losses belong to
    assert torch.allclose(indep.loss(x, y, x_adv), indep.report.best_loss, atol=1e-5)
    assert len(indep.report.step_losses) == 3 and len(indep.report.step_losses[0]) == 2


def test_surrogate_is_used_in_eval_mode_and_left_untouched(setup):
    model, target, x, y = setup
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Alignment(model, target, BASE, steps=2, restarts=1)(x, y)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()


def test_model_whose_loss_needs_the_label(cifar_test_batch):
    """A CosFace head computes its margin from y: crafting passes y through loss_fn."""
    torch.manual_seed(0)
    backbone = create_model("resnet18", num_classes=16, width=0.125)
    model = MarginClassifier(backbone, CosFace(16, 10, s=16, m=0.35)).eval()
    x, y = cifar_test_batch
    target = target_gradient(model, TensorDataset(x, y), loss_fn=make_loss("rce", label_in_forward=True))
    atk = Alignment(model, target, BASE, steps=8, restarts=1,
                    loss_fn=make_loss("ce", label_in_forward=True))
    start = atk.loss(x[:8], y[:8], RandomNoise(model, eps=EPS)(x[:8], y[:8]))
    atk(x[:8], y[:8])
    assert atk.report.best_loss < start


@pytest.mark.parametrize("name", ["l2", "tv", "ssim"])
def test_regularizer_makes_the_perturbation_smaller(setup, name):
    model, target, x, y = setup
    plain = Alignment(model, target, BASE, steps=6, restarts=1)(x, y)
    reg = Alignment(model, target, BASE, steps=6, restarts=1, regularizer=name, reg_weight=1e4)(x, y)
    assert (reg - x).abs().mean() < 0.8 * (plain - x).abs().mean()


def test_augmentation_changes_the_crafted_result(setup):
    model, target, x, y = setup
    plain = Alignment(model, target, BASE, steps=3, restarts=1)(x, y)
    augmented = Alignment(model, target, BASE, steps=3, restarts=1, augment=True)(x, y)
    assert not torch.equal(plain, augmented)


def test_bad_arguments_are_rejected(setup):
    model, target, x, y = setup
    with pytest.raises(ValueError, match="variant"):
        Alignment(model, target, variant="sideways")
    with pytest.raises(ValueError, match="target_grad"):
        Alignment(model, target[:-1])
    with pytest.raises(ValueError, match="regularizer"):
        Alignment(model, target, regularizer="blur")
    with pytest.raises(ValueError, match="backend"):
        Alignment(model, target, backend="magic")
    with pytest.raises(TypeError):
        Alignment(model, target, sideways=True)  # not a setting


@pytest.mark.parametrize("eps", [8 / 255, 0.5, 300, -1, float("nan"), "8", True])
def test_eps_in_the_wrong_unit_or_range_is_refused_everywhere(setup, eps):
    """ε is in pixel levels at every entry point: a fraction (it would round to no change) or a
    value off the 0-255 range fails with a message naming the unit."""
    model, target, x, y = setup
    for make in (lambda: CraftSettings(eps=eps), lambda: Alignment(model, target, eps=eps),
                 lambda: RandomNoise(model, eps=eps), lambda: quantize_within(x, x, eps)):
        with pytest.raises(ValueError, match="pixel levels"):
            make()


def test_pixel_levels_convert_once_to_the_radius():
    assert check_eps(0) == 0.0 and check_eps(1) == 1.0 and check_eps(255) == 255.0
    assert eps_radius(16) == 16 / 255
    with pytest.raises(ValueError, match="pass 8 instead"):
        check_eps(8 / 255)


def test_build_attack_builds_every_registered_method_from_settings(setup):
    model, target, x, y = setup
    for name in METHODS.names():
        if issubclass(METHODS.get(name), EmbeddingAttack):
            continue  # they aim at embedding anchors, not a target gradient: tests/test_evasion.py
        settings = BASE.replace(method=name, steps=1, restarts=1)
        atk = build_attack(model, settings, target)
        assert type(atk) is METHODS.get(name) and atk.settings == settings
        assert (atk(x, y) - x).abs().max() <= RADIUS + 1e-6
    with pytest.raises(ValueError, match="needs a target"):
        build_attack(model, BASE)


@pytest.mark.parametrize("backend", ["double", "fd-frozen"])
@pytest.mark.parametrize("variant", ["joint", "independent"])
def test_preprocess_is_the_same_objective_as_a_loss_that_applies_the_map(setup, backend, variant):
    """``preprocess`` (a θ-free map differentiated once per step) gives the step gradient and the
    selection loss of a loss function that applies the same map inside every pass."""
    model, target, x, y = setup
    x, y = x[:4], y[:4]
    blur = lambda images, labels: torch.nn.functional.avg_pool2d(images, 3, 1, 1).flip(-1)  # noqa: E731
    ce = make_loss("ce")
    inside = Alignment(model, target, BASE, variant=variant, backend=backend,
                       loss_fn=lambda m, images, labels: ce(m, blur(images, labels), labels))
    outside = Alignment(model, target, BASE, variant=variant, backend=backend, loss_fn=ce, preprocess=blur)
    delta = ((torch.rand_like(x) * 2 - 1) * RADIUS).requires_grad_(True)
    grad_inside, value_inside = inside.step_gradient(x, y, delta)
    grad_outside, value_outside = outside.step_gradient(x, y, delta)
    assert value_outside == pytest.approx(value_inside, rel=1e-5)
    cosine = torch.nn.functional.cosine_similarity(grad_inside.flatten(), grad_outside.flatten(), dim=0)
    assert cosine > 0.9999
    adv = (x + delta).detach()
    assert torch.allclose(outside.loss(x, y, adv), inside.loss(x, y, adv), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(outside.loss(x, y, adv), Alignment(model, target, BASE, variant=variant).loss(x, y, adv))


class _SumEmbedding(torch.nn.Module):
    """[sum of pixels, 1]: its cosine with (1, 0) rises with every pixel, so an evasion step's
    signed gradient is −1 everywhere and signed Adam moves each pixel by exactly its step size."""

    def forward(self, x):
        return torch.stack([x.flatten(1).sum(1), torch.ones(len(x))], 1)


@pytest.mark.parametrize("decay_at, moved", [((3 / 8, 5 / 8, 7 / 8), 0.1 + 0.01 + 0.001 + 0.0001),
                                             ((0.5,), 0.1 + 0.1 + 0.01 + 0.01)])
def test_the_step_size_drops_tenfold_at_each_decay_fraction(decay_at, moved, monkeypatch):
    from faceguard.attacks import Evade

    x = torch.full((1, 3, 4, 4), 0.5)
    attack = Evade(_SumEmbedding(), [torch.tensor([[1.0, 0.0]])], eps=16, steps=4, step_size=0.1, augment="none",
                   decay_at=decay_at, ensemble=("sface",))  # the ensemble is only named here
    monkeypatch.setattr(attack, "random_delta", torch.zeros_like)  # start at x itself
    delta = attack(x, torch.tensor([0])) - x
    assert torch.allclose(delta, torch.full_like(x, -moved * eps_radius(16)), rtol=1e-5)
