"""Target gradient streaming/subsets and per-image alignment."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from faceguard.gradients import flat_dot, flat_norm, param_gradient, per_sample_alignment, target_gradient
from faceguard.losses import cross_entropy, reverse_cross_entropy


def small_cnn(classes: int = 4) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, classes))


def data(n: int = 23, classes: int = 4):
    g = torch.Generator().manual_seed(2)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_streaming_target_gradient_equals_the_full_batch_gradient():
    model = small_cnn().eval()
    x, y = data()
    params = list(model.parameters())
    full = param_gradient(model, params, x, y, reverse_cross_entropy)
    streamed = target_gradient(model, TensorDataset(x, y), batch_size=5)
    from_loader = target_gradient(model, DataLoader(TensorDataset(x, y), batch_size=7))
    for f, s, l in zip(full, streamed, from_loader):
        assert torch.allclose(f, s, atol=1e-5) and torch.allclose(f, l, atol=1e-5)


def test_target_gradient_keeps_the_model_untouched():
    model = small_cnn().train()
    stats = model[1].running_mean.clone()
    target_gradient(model, TensorDataset(*data()), batch_size=8)
    assert model.training
    assert torch.equal(stats, model[1].running_mean)


def test_subset_fraction_is_a_seeded_random_subset():
    model = small_cnn().eval()
    x, y = data(40)
    dataset = TensorDataset(x, y)
    a = target_gradient(model, dataset, fraction=0.25, seed=3)
    b = target_gradient(model, dataset, fraction=0.25, seed=3)
    c = target_gradient(model, dataset, fraction=0.25, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.allclose(u, v) for u, v in zip(a, c))
    keep = sorted(torch.randperm(40, generator=torch.Generator().manual_seed(3))[:10].tolist())
    expected = param_gradient(model, list(model.parameters()), x[keep], y[keep], reverse_cross_entropy)
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, expected))


def test_target_gradient_over_chosen_parameters_only():
    model = small_cnn().eval()
    last = [model[5].weight, model[5].bias]
    t = target_gradient(model, TensorDataset(*data()), params=last)
    assert [p.shape for p in t] == [p.shape for p in last]


def test_per_sample_alignment_matches_a_loop_over_images():
    model = small_cnn().eval()
    x, y = data(9)
    params = list(model.parameters())
    target = target_gradient(model, TensorDataset(*data(30)))
    batched = per_sample_alignment(model, params, x, y, target, cross_entropy, chunk_size=4)
    for i in range(9):
        g = param_gradient(model, params, x[i:i + 1], y[i:i + 1], cross_entropy)
        expected = 1 - flat_dot(target, g) / (flat_norm(target) * flat_norm(g))
        assert abs(float(batched[i] - expected)) < 1e-5


def test_gradient_files_round_trip_in_parameter_order(tmp_path):
    from faceguard.gradients import load_gradient, save_gradient

    grads = [torch.randn(3, 2), torch.randn(5), torch.randn(2, 2, 2)]
    save_gradient(grads, tmp_path / "t.safetensors")
    loaded = load_gradient(tmp_path / "t.safetensors")
    assert len(loaded) == 3 and all(torch.equal(a, b) for a, b in zip(grads, loaded))
