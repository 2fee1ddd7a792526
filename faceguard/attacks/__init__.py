"""Crafting methods, one small class each: ``x_adv = Method(model, ..., eps=8)(x, y)`` (ε in pixel
levels); registered by name in :data:`faceguard.registry.METHODS` and built from settings by
:func:`build_attack`."""
from faceguard.attacks.alignment import Alignment
from faceguard.attacks.autoregressive import Autoregressive
from faceguard.attacks.base import CraftReport, Perturbation, PGDAttack
from faceguard.attacks.baselines import RandomNoise, TensorClog, Unlearnable
from faceguard.attacks.build import build_attack
from faceguard.attacks.evasion import EmbeddingEnsemble, Evade, Target
from faceguard.attacks.poisons import AdversarialPoison
from faceguard.attacks.synthetic import SyntheticNoise

__all__ = ["AdversarialPoison", "Alignment", "Autoregressive", "CraftReport", "EmbeddingEnsemble", "Evade", "PGDAttack", "Perturbation", "RandomNoise",
           "SyntheticNoise", "Target", "TensorClog", "Unlearnable", "build_attack"]
