"""faceguard: protect face-photo corpora against face-recognition training (Fowl et al., ICLR 2022).

Quick use on any PyTorch classifier::

    from faceguard import Alignment, target_gradient
    T = target_gradient(surrogate, train_loader)
    x_protected = Alignment(surrogate, T, eps=8 / 255)(x, y)
"""
from faceguard.attacks import METHODS, Alignment, RandomNoise, TensorClog, Unlearnable
from faceguard.gradients import target_gradient
from faceguard.losses import cross_entropy, make_loss, reverse_cross_entropy
from faceguard.quantize import eps_from_pixels, quantize_within, to_uint8

__version__ = "0.1.0"


def __getattr__(name: str):
    """``faceguard.Protector`` on first use: it pulls in face detection, which plain crafting does not need."""
    if name == "Protector":
        from faceguard.protect import Protector

        return Protector
    raise AttributeError(f"module 'faceguard' has no attribute {name!r}")


__all__ = ["METHODS", "Alignment", "Protector", "RandomNoise", "TensorClog", "Unlearnable", "cross_entropy",
           "eps_from_pixels", "make_loss", "quantize_within", "reverse_cross_entropy",
           "target_gradient", "to_uint8"]
