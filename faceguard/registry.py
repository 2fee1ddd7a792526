"""The crafting vocabulary: every name a setting, a command line or a result file can use.

Six registries, each name → callable, in the style of the model registry
(:mod:`recognition.models.registry`):

* :data:`METHODS` — crafting methods (classes with the torchattacks-style ``x_adv = atk(x, y)``);
* :data:`BACKENDS` — how the alignment method computes ∇Δ A (:mod:`faceguard.backends`);
* :data:`REGULARIZERS` — visibility penalties added to the objective (:mod:`faceguard.regularizers`);
* :data:`OBJECTIVES` — per-sample losses ``loss_fn(model, x, y) -> [B]`` (:mod:`faceguard.losses`);
* :data:`AUGMENTATIONS` — differentiable views of x + Δ drawn at every step (:mod:`faceguard.augment`);
* :data:`ENSEMBLE` — recognizers an evasion method crafts against in ``faceguard protect``
  (:mod:`faceguard.protect.evasion`): each loads a network and how it sees a face in a photo.

Entries are lazy ``"module:attribute"`` paths, so this module imports no torch: the command lines
take their ``choices`` from here and ``faceguard --help`` stays fast. A new method, backend,
regulariser or objective is added here once and is then known everywhere.
"""
from __future__ import annotations

from recognition.registry import Registry

METHODS = Registry("method", {
    "alignment": "faceguard.attacks.alignment:Alignment",
    "random": "faceguard.attacks.baselines:RandomNoise",
    "tensorclog": "faceguard.attacks.baselines:TensorClog",
    "unlearnable": "faceguard.attacks.baselines:Unlearnable",
    "adversarial": "faceguard.attacks.poisons:AdversarialPoison",
    "error-minimizing": "faceguard.attacks.poisons:ErrorMinimizing",
    "error-minimizing-classwise": "faceguard.attacks.poisons:ClasswiseErrorMinimizing",
    "autoregressive": "faceguard.attacks.autoregressive:Autoregressive",
    "synthetic": "faceguard.attacks.synthetic:SyntheticNoise",
    "evade": "faceguard.attacks.evasion:Evade",
    "target": "faceguard.attacks.evasion:Target",
})

BACKENDS = Registry("backend", {
    "double": "faceguard.backends:DoubleBackprop",
    "fd": "faceguard.backends:central_difference",
    "fd-frozen": "faceguard.backends:frozen_central_difference",
    "fd-frozen-1s": "faceguard.backends:one_sided_difference",
    "fd-frozen-lag": "faceguard.backends:lagged_one_sided_difference",
})
REGULARIZERS = Registry("regularizer", {
    "l2": "faceguard.regularizers:l2_penalty",
    "tv": "faceguard.regularizers:tv_penalty",
    "ssim": "faceguard.regularizers:ssim_penalty",
    "lab": "faceguard.regularizers:lab_penalty",
})
OBJECTIVES = Registry("objective", {
    "ce": "faceguard.losses:cross_entropy",
    "rce": "faceguard.losses:reverse_cross_entropy",
})
AUGMENTATIONS = Registry("augmentation", {
    "flip-translate": "faceguard.augment:crafting_augmentation",
    "scraper": "faceguard.augment:scraper_augmentation",
})
ENSEMBLE = Registry("recognizer", {
    "profile": "faceguard.protect.evasion:profile_member",
    "dlib-resnet": "faceguard.protect.evasion:dlib_member",
    "sface": "faceguard.protect.evasion:sface_member",
    "insightface-mbf": "faceguard.protect.evasion:insightface_mbf_member",
})
NO_REGULARIZER = "none"
NO_AUGMENTATION = "none"
# The alignment method's variants: one cosine over the batch, or each image on its own (online).
VARIANTS = ("joint", "independent")

# Which backend is the default is a measured choice: see docs/methods.md and the benchmark results
# it links (corpus crafting at the paper's step counts vs. protect's few steps per photo).
DEFAULT_BACKEND = "fd-frozen-lag"
PROTECT_BACKEND = "fd-frozen"
# The methods that craft against an ensemble of recognizers (CraftSettings.ensemble).
EVASION_METHODS = ("evade", "target")
# The evasion ensemble of settings version 2 (before the ensemble was a setting), and today's default:
# adding sface moved the held-out insightface-mbf most (benchmarks/results/recognizers.md).
LEGACY_ENSEMBLE = ("profile", "dlib-resnet")
DEFAULT_ENSEMBLE = ("profile", "dlib-resnet", "sface")


def is_data_free(method: str) -> bool:
    """Whether the registered crafting ``method`` uses neither a network's weights nor the images'
    content (its class's ``data_free``): nothing needs training before it crafts."""
    return bool(getattr(METHODS.get(method), "data_free", False))
