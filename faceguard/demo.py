"""A short, real end-to-end crafting run on CIFAR-10 images (the README's main job until
``faceguard protect`` lands): train a small surrogate, take the target gradient, craft, report.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torchvision.utils import make_grid

from faceguard.attacks import Alignment, RandomNoise
from faceguard.gradients import target_gradient
from faceguard.imageio import save_png_atomic
from faceguard.quantize import eps_from_pixels, quantize_within, to_uint8
from recognition.datasets import default_data_dir, load_cifar10
from recognition.models import create_model
from recognition.training import TrainConfig, resolve_device, train_classifier


@dataclass
class DemoResult:
    """What the demo measured (written as demo.json beside the images)."""

    surrogate_train_accuracy: float
    alignment_random_start: float
    alignment_crafted: float
    linf_after_quantisation: int
    eps: float
    images: int
    seconds_crafting: float


def run_demo(out: Path, data: Path | None = None, eps: float = 8, per_class: int = 100,
             images: int = 64, steps: int = 40, epochs: int = 4, device: str = "auto",
             seed: int = 0) -> DemoResult:
    """Protect ``images`` CIFAR-10 training images at ``eps``/255 and write before/after PNGs."""
    torch.manual_seed(seed)
    dev = resolve_device(device)
    train = load_cifar10((data or default_data_dir()) / "cifar10_jpeg.tar.gz", "train", per_class=per_class)
    model = create_model("resnet18", num_classes=10, width=0.125).to(dev)
    history = train_classifier(model, train, TrainConfig(epochs=epochs, batch_size=64, lr=0.05,
                                                         schedule="cosine", seed=seed), device=dev)
    model.eval()
    target = target_gradient(model, train, batch_size=256, progress=True)
    x = train.images[:images].float() / 255
    y = train.labels[:images]
    eps_frac = eps_from_pixels(eps)
    attack = Alignment(model, target, eps=eps_frac, steps=steps, restarts=1, seed=seed)
    start = float(attack.loss(x, y, RandomNoise(model, eps_frac, seed=seed)(x, y)))
    protected = attack(x, y)
    quantised = quantize_within(protected, x, eps_frac)
    linf = int((quantised.int() - to_uint8(x).int()).abs().max())
    for name, batch in (("clean.png", to_uint8(x)), ("protected.png", quantised)):
        grid = make_grid(batch, nrow=8, padding=1)
        save_png_atomic(grid.permute(1, 2, 0).numpy(), out / name)
    result = DemoResult(history[-1]["train_acc"], start, float(attack.report.best_loss), linf, eps,
                        images, attack.report.seconds)
    (out / "demo.json").write_text(json.dumps(asdict(result), indent=2))
    return result
