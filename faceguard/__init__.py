"""faceguard: protect face-photo corpora against face-recognition training (Fowl et al., ICLR 2022).

Quick use on any PyTorch classifier (ε in 0–255 pixel levels everywhere)::

    from faceguard import Alignment, CraftSettings, target_gradient
    T = target_gradient(surrogate, train_loader)
    x_protected = Alignment(surrogate, T, CraftSettings(eps=8))(x, y)

Names are imported on first use, so ``import faceguard`` (and ``faceguard --help``) does not load
torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Alignment": "faceguard.attacks", "RandomNoise": "faceguard.attacks", "TensorClog": "faceguard.attacks",
    "Unlearnable": "faceguard.attacks", "build_attack": "faceguard.attacks",
    "CraftSettings": "faceguard.settings", "protect_settings": "faceguard.settings",
    "poison_settings": "faceguard.settings",
    "METHODS": "faceguard.registry", "BACKENDS": "faceguard.registry", "REGULARIZERS": "faceguard.registry",
    "OBJECTIVES": "faceguard.registry",
    "target_gradient": "faceguard.gradients",
    "cross_entropy": "faceguard.losses", "make_loss": "faceguard.losses", "reverse_cross_entropy": "faceguard.losses",
    "quantize_within": "faceguard.quantize", "to_uint8": "faceguard.quantize",
    "check_eps": "faceguard.units", "eps_radius": "faceguard.units",
    "Protector": "faceguard.protect.protector",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import an exported name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'faceguard' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
