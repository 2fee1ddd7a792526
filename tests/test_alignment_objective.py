"""The gradients that drive crafting agree with independent computations (float64, smooth net).

A smooth network (tanh/softplus) is used so finite differences of the second-order quantities are
well defined; ReLU networks are piecewise linear in the input.
"""
import torch
from torch import nn

from faceguard.attacks import Alignment
from faceguard.gradients import flat_dot, flat_norm, target_gradient
from faceguard.losses import cross_entropy



def smooth_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(12, 5), nn.Softplus(), nn.Linear(5, 3))
    return net.double().eval()


def batch(n: int = 3):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(n, 2, 4, 4, generator=g, dtype=torch.float64)
    return x, torch.tensor([0, 1, 2, 1, 0][:n])


def first_order_grad(model, x, y):
    """G = ∇θ Σ CE, by plain first-order autograd (no graph kept): the independent reference."""
    loss = cross_entropy(model, x, y).sum()
    return torch.autograd.grad(loss, list(model.parameters()))


def make_attack(variant: str):
    model = smooth_net()
    x_ref, y_ref = batch(5)
    target = target_gradient(model, torch.utils.data.TensorDataset(x_ref, y_ref))
    return model, target, Alignment(model, target, eps=25.5, steps=1, restarts=1, variant=variant, augment=False,
                                    backend="double")


def test_gradcheck_of_the_joint_objective():
    model, _, atk = make_attack("joint")
    x, y = batch()
    delta = (torch.rand_like(x) - 0.5) * 0.1
    delta.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: atk.objective(x + d, y), (delta,), eps=1e-6, atol=1e-7)


def test_joint_gradient_agrees_with_finite_differences_of_eq3():
    model, target, atk = make_attack("joint")
    x, y = batch()

    def reference_a(delta):
        g = first_order_grad(model, x + delta, y)
        return 1 - flat_dot(target, g) / (flat_norm(target) * flat_norm(g))

    delta = ((torch.rand_like(x) - 0.5) * 0.1).requires_grad_(True)
    (analytic,) = torch.autograd.grad(atk.objective(x + delta, y), delta)
    numeric = torch.zeros_like(x)
    h = 1e-6
    for i in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=x.dtype)
        e[i] = h
        e = e.view_as(x)
        numeric.view(-1)[i] = (reference_a(delta.detach() + e) - reference_a(delta.detach() - e)) / (2 * h)
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert float(atk.evaluate(x + delta.detach(), y)) == float(reference_a(delta.detach()))


def test_independent_gradient_is_the_detached_norm_objective():
    model, target, atk = make_attack("independent")
    x, y = batch()
    delta0 = ((torch.rand_like(x) - 0.5) * 0.1)
    fixed_norm = flat_norm(first_order_grad(model, x + delta0, y))

    def reference(delta):  # ‖G‖ frozen at Δ0: only the inner product moves
        return 1 - flat_dot(target, first_order_grad(model, x + delta, y)) / (flat_norm(target) * fixed_norm)

    delta = delta0.clone().requires_grad_(True)
    (analytic,) = torch.autograd.grad(atk.objective(x + delta, y), delta)
    direction = torch.randn_like(x)
    h = 1e-6
    numeric = (reference(delta0 + h * direction) - reference(delta0 - h * direction)) / (2 * h)
    assert abs(float((analytic * direction).sum() - numeric)) < 1e-6 * max(1.0, abs(float(numeric)))


def test_independent_step_of_an_image_does_not_depend_on_the_rest_of_the_batch():
    _, _, atk = make_attack("independent")
    x, y = batch(5)
    grads = []
    for others in ([1, 2], [3, 4], []):
        idx = [0] + others
        delta = torch.zeros_like(x[idx]).requires_grad_(True)
        (g,) = torch.autograd.grad(atk.objective(x[idx] + delta, y[idx]), delta)
        grads.append(g[0].flatten())
    for g in grads[1:]:
        assert torch.nn.functional.cosine_similarity(grads[0], g, dim=0) > 1 - 1e-9
        assert torch.equal(torch.sign(grads[0]), torch.sign(g))


def test_joint_step_of_an_image_depends_on_the_batch():
    _, _, atk = make_attack("joint")
    x, y = batch(5)
    directions = []
    for idx in ([0, 1, 2], [0, 3, 4]):
        delta = torch.zeros_like(x[idx]).requires_grad_(True)
        (g,) = torch.autograd.grad(atk.objective(x[idx] + delta, y[idx]), delta)
        directions.append(g[0].flatten())
    assert torch.nn.functional.cosine_similarity(*directions, dim=0) < 1 - 1e-6
