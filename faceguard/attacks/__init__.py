"""Crafting methods, one small class each: ``x_adv = Method(model, ..., eps=8/255)(x, y)``."""
from faceguard.attacks.alignment import VARIANTS, Alignment
from faceguard.attacks.base import CraftReport, Perturbation, PGDAttack
from faceguard.attacks.baselines import RandomNoise, TensorClog, Unlearnable

METHODS = {"alignment": Alignment, "random": RandomNoise, "tensorclog": TensorClog,
           "unlearnable": Unlearnable}

__all__ = ["Alignment", "CraftReport", "METHODS", "PGDAttack", "Perturbation", "RandomNoise",
           "TensorClog", "Unlearnable", "VARIANTS"]
