""":class:`CraftSettings`: every choice that changes what a crafting run produces, in one object.

``faceguard poison``, ``faceguard protect`` / :class:`faceguard.Protector`, the crafting methods and
both benchmark runners read their crafting choices from one ``CraftSettings``; result files and
the protect manifest store :meth:`CraftSettings.to_dict`, which carries :data:`SETTINGS_VERSION`,
so a stored run can be compared with a new one and an unknown format is refused by name.

Names are checked against the registries of :mod:`faceguard.registry` when the object is made, so
a typo fails at once with the list of choices, not deep inside a run. ε is in 0–255 pixel levels
(:mod:`faceguard.units`). This module imports no torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields

from faceguard.registry import (AUGMENTATIONS, BACKENDS, DEFAULT_BACKEND, DEFAULT_ENSEMBLE, ENSEMBLE, EVASION_METHODS,
                                LEGACY_ENSEMBLE, METHODS, NO_AUGMENTATION, NO_REGULARIZER, OBJECTIVES,
                                PROTECT_BACKEND, REGULARIZERS, VARIANTS)
from faceguard.units import check_eps

# version 1: the flat, unversioned settings of earlier protect manifests; 2: before ``ensemble``;
# 3: before ``decay_at`` (every run decayed at PAPER_DECAYS); 4: before the perceptual shaping
# (``chroma``, ``budget_floor``, ``feather``, ``grid``: every run was unshaped, on the profile's grid)
SETTINGS_VERSION = 5
PAPER_DECAYS = (3 / 8, 5 / 8, 7 / 8)  # the step size drops 10x at these fractions of the steps (Witches' Brew)
NOISE_STARTS = ("zero", "uniform")  # error-minimizing noise's Δ before its first round
DEFAULT_REG_WEIGHT = 0.1  # weight of a visibility regulariser when one is chosen without a weight
# the methods faceguard protect crafts with; all paste Δ through the photo warp
PROTECT_METHODS = ("alignment", "evade", "target", "adversarial", "error-minimizing-classwise", "synthetic")
# those crafting on the profile's network (its classifier, or a fresh copy for error-minimizing noise)
# or on no network (synthetic) rather than on an ensemble of recognizers: the ones that handle
# pre-cropped faces
PROTECT_CLASSIFIER_METHODS = ("alignment", "adversarial", "error-minimizing-classwise", "synthetic")
# those made over a whole folder at once (one Δ per person), not photo by photo
PROTECT_CORPUS_METHODS = ("error-minimizing-classwise", "synthetic")
# faceguard protect's default: the method that protected most in benchmarks/results/recognizers.md
# (threat models 2 and 3); alignment was indistinguishable from random noise for threat model 1.
DEFAULT_PROTECT_METHOD = "evade"
# faceguard poison's default (dataset release, threat model 1): the method with the lowest victim accuracy
# averaged over no defense and the data defenses in benchmarks/results/cifar10-cpu-poisons.md
DEFAULT_POISON_METHOD = "error-minimizing-classwise"


@dataclass(frozen=True)
class CraftSettings:
    """How perturbations are crafted; the defaults are the paper's (240 steps, 8 restarts, augmentation).

    * ``method`` — a name of :data:`faceguard.registry.METHODS`; ``variant`` — the alignment
      variant, ``joint`` (one cosine per batch) or ``independent`` (each image alone).
    * ``eps`` — the ℓ∞ bound in 0–255 pixel levels.
    * ``steps``, ``restarts``, ``step_size`` — signed-Adam PGD: ``step_size`` is the initial step
      as a fraction of ε, decayed 10× at 3/8, 5/8 and 7/8 of the steps. 0.1 suits 240 steps; short
      runs need larger steps to cross the ε-ball at all (30 steps at 0.1 move at most ~1.3 ε).
    * ``backend`` — how the alignment gradient is computed (:data:`faceguard.registry.BACKENDS`),
      with ``fd_step`` (relative finite-difference step) and ``fd_refresh`` (``fd-frozen-lag``'s
      steps between recomputations of G).
    * ``augment`` — the differentiable views drawn at every step: ``none`` or a name of
      :data:`~faceguard.registry.AUGMENTATIONS` (``True`` means ``flip-translate``, ``False``
      ``none``, as in the trainer's config).
    * ``regularizer`` (``none`` or a name of :data:`~faceguard.registry.REGULARIZERS`) with
      ``reg_weight``; without a regulariser the weight is stored as 0.
    * ``objective`` — the per-sample loss whose parameter gradient is crafted (``ce``).
    * ``ensemble`` — the recognizers ``faceguard protect``'s evasion methods craft against (names
      of :data:`~faceguard.registry.ENSEMBLE`, at least one, no repeats; a list is stored as a
      tuple). Other methods use none, so theirs is stored empty.
    * ``min_rounds`` — error-minimizing noise: rounds of training and perturbing run before its
      model fitting the perturbed images may end the loop (on small face sets that model fits
      them after one round, leaving weak noise: benchmarks/results/faces-cpu-em.md);
      ``noise_start`` — its Δ before the first round: ``zero``, or ``uniform`` in the ε-ball (the
      original code's start).
    * ``chroma``, ``budget_floor``, ``feather`` — perceptual shaping of Δ inside ε
      (:mod:`faceguard.shaping`): the bound of Δ's colour (chroma) part as a fraction of ε (1 = no
      colour limit, 0 = grey changes only; every PGD method), and for ``faceguard protect``'s photos
      the budget map of each face's paste mask: its fraction of ε on flat areas (1 = ε everywhere;
      texture and edges always get ε) and the fraction of the face crop's side over which Δ fades
      out at its border (0 = none). The defaults shape nothing.
    * ``grid`` — evasion in ``faceguard protect``: the side in pixels of the aligned crop grid Δ is
      parametrised on and pasted from (0 = the profile's crop size, 64 for the shipped profile). Each
      recognizer reads the perturbed photo through its own view, so the grid only sets how fine Δ
      may be: a coarse grid upsampled into a large face makes low-frequency blotches.
    * ``seed`` — batch ``k`` of a corpus is crafted with ``seed + k``, so any batch can be redone
      alone (resume) with the same result; ``batch_size`` — images per crafting batch, also the set
      one joint cosine is taken over.
    """

    method: str = "alignment"
    eps: float = 8.0
    steps: int = 240
    restarts: int = 8
    step_size: float = 0.1
    decay_at: tuple[float, ...] = PAPER_DECAYS
    variant: str = "joint"
    backend: str = DEFAULT_BACKEND
    augment: str = "flip-translate"
    regularizer: str = NO_REGULARIZER
    reg_weight: float = DEFAULT_REG_WEIGHT
    objective: str = "ce"
    ensemble: tuple[str, ...] = DEFAULT_ENSEMBLE
    min_rounds: int = 1
    noise_start: str = "zero"
    chroma: float = 1.0
    budget_floor: float = 1.0
    feather: float = 0.0
    grid: int = 0
    seed: int = 0
    batch_size: int = 128
    fd_step: float = 1e-5
    fd_refresh: int = 2

    def __post_init__(self) -> None:
        METHODS.check(self.method)
        BACKENDS.check(self.backend)
        OBJECTIVES.check(self.objective)
        if self.noise_start not in NOISE_STARTS:
            raise ValueError(f"unknown noise_start {self.noise_start!r}; choose from {', '.join(NOISE_STARTS)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if isinstance(self.augment, bool):
            object.__setattr__(self, "augment", "flip-translate" if self.augment else NO_AUGMENTATION)
        if self.augment != NO_AUGMENTATION:
            AUGMENTATIONS.check(self.augment)
        if self.regularizer != NO_REGULARIZER:
            REGULARIZERS.check(self.regularizer)
        else:
            object.__setattr__(self, "reg_weight", 0.0)
        object.__setattr__(self, "eps", check_eps(self.eps))
        ensemble = (self.ensemble,) if isinstance(self.ensemble, str) else tuple(self.ensemble)
        for name in ensemble:
            ENSEMBLE.check(name)
        if self.method not in EVASION_METHODS:
            ensemble = ()
            object.__setattr__(self, "grid", 0)  # only evasion's Δ lives on a grid of its own
        elif not ensemble or len(set(ensemble)) != len(ensemble):
            raise ValueError(f"the ensemble needs at least one recognizer and no repeats, got {list(ensemble)}")
        object.__setattr__(self, "ensemble", ensemble)
        if self.steps < 0 or self.restarts < 1:
            raise ValueError(f"need steps >= 0 and restarts >= 1, got steps={self.steps}, restarts={self.restarts}")
        decay_at = tuple(float(f) for f in ((self.decay_at,) if isinstance(self.decay_at, (int, float))
                                            else self.decay_at))
        if any(not 0 < f < 1 for f in decay_at) or list(decay_at) != sorted(set(decay_at)):
            raise ValueError(f"decay_at needs increasing fractions of the steps between 0 and 1, got {list(decay_at)}")
        object.__setattr__(self, "decay_at", decay_at)
        if not (0 <= self.chroma <= 1 and 0 <= self.budget_floor <= 1 and 0 <= self.feather < 0.5):
            raise ValueError(f"need chroma and budget_floor in [0, 1] and feather in [0, 0.5), got chroma={self.chroma}, "
                             f"budget_floor={self.budget_floor}, feather={self.feather}")
        if self.grid != 0 and not 16 <= self.grid <= 512:
            raise ValueError(f"grid must be 0 (the profile's crop size) or a side of 16-512 pixels, got {self.grid}")
        if self.batch_size < 1 or self.fd_refresh < 1 or self.min_rounds < 1 or self.step_size <= 0 or self.fd_step <= 0:
            raise ValueError("batch_size, fd_refresh and min_rounds must be >= 1, step_size and fd_step > 0")

    def replace(self, **changes: object) -> CraftSettings:
        """A copy with some fields changed (checked like a new object)."""
        return dataclasses.replace(self, **changes)

    @property
    def shaped(self) -> bool:
        """Whether Δ is shaped beyond the ℓ∞ ball (:mod:`faceguard.shaping`)."""
        return self.chroma < 1 or self.budget_floor < 1 or self.feather > 0

    @property
    def label(self) -> str:
        """The method as result files name it: ``alignment-joint``, ``alignment-independent``, ``random``, …"""
        return f"{self.method}-{self.variant}" if self.method == "alignment" else self.method

    def to_dict(self) -> dict:
        """JSON-ready fields plus ``version`` (:data:`SETTINGS_VERSION`)."""
        return {"version": SETTINGS_VERSION, **asdict(self), "ensemble": list(self.ensemble),
                "decay_at": list(self.decay_at)}

    @classmethod
    def from_dict(cls, data: dict) -> CraftSettings:
        """Settings stored by :meth:`to_dict`; versions 2 to 4 are read with what they stored
        implicitly (2: the ensemble evasion used then; 2 and 3: the paper's step-size decays; all:
        no shaping), another
        version or an unknown key is refused by name."""
        data = dict(data)
        version = data.pop("version", None)
        if version == 2 and "ensemble" not in data:
            version, data["ensemble"] = 3, LEGACY_ENSEMBLE
        if version == 3:
            version = 4
            data.setdefault("decay_at", PAPER_DECAYS)
        if version == 4:  # unshaped: the defaults of the shaping fields
            version = SETTINGS_VERSION
        if version != SETTINGS_VERSION:
            raise ValueError(f"crafting settings of version {version} are not supported "
                             f"(this faceguard reads version {SETTINGS_VERSION})")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown crafting settings: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_label(cls, label: str, **changes: object) -> CraftSettings:
        """Settings for a result-file method label (the inverse of :attr:`label`)."""
        for variant in VARIANTS:
            if label == f"alignment-{variant}":
                return cls(method="alignment", variant=variant, **changes)
        return cls(method=label, **changes)


ERROR_MINIMIZING_METHODS = ("error-minimizing", "error-minimizing-classwise")
# Unlearnable Examples' inner minimisation: 10 signed steps of 0.1 ε a round (the benchmarks craft with these too)
ERROR_MINIMIZING_STEPS = {"steps": 10, "step_size": 0.1}

# What faceguard protect crafts with when only the method is chosen: alignment as the paper's online
# setting at few steps; the class-targeted adversarial poison with enough steps to cross the ε-ball;
# evasion with scraper EOT and the SSIM regulariser at weight 1.5 for 33 steps whose step size drops
# 10x once, after 22 (decay_at 0.67): the first 22 steps of the 60-step paper schedule that met every
# ε = 16 target of the recognizers benchmark (recognizers-s13.md), whose later small steps changed
# neither protection nor looks (recognizers-s14.md), then 11 small ones. With the evasion regions at
# one work pixel per view pixel (faceguard.protect.evasion.OVERSAMPLING) it protected, over three
# crafting seeds, at least as well as session 14's 37 steps at 1.5 in about 80 % of the crafting
# time (benchmarks/results/recognizers-s17-seeds.md). Targeted evasion likewise; class-wise
# error-minimizing noise with the poison's inner steps.
EVASION_DEFAULTS = {"steps": 33, "step_size": 0.25, "decay_at": (0.67,), "augment": "scraper", "regularizer": "ssim",
                    "reg_weight": 1.5}
# faceguard protect --strength: points of the protection / visibility frontier for evasion, chosen on
# the tuning half of the recognizers benchmark's people (benchmarks/results/frontier.md). ``high`` is
# session 17's unshaped default (colour changes on the profile's 64-pixel grid: most protection,
# 3.9-4.4x as visible as a JPEG-75 re-save); ``mid``, the default since session 20, makes grey
# changes only on a 128-pixel grid (no colour blotches; 2.8-3.4x; weaker against
# insightface-mbf, about as strong against dlib-resnet and edgeface-s); ``low`` adds the
# photo-resolution budget map, a feather and the CIELAB term (2.3-2.5x; much weaker everywhere).
STRENGTHS: dict[str, dict] = {
    "high": {},
    "mid": {"chroma": 0.0, "grid": 128},
    "low": {"chroma": 0.0, "grid": 128, "budget_floor": 0.3, "feather": 0.1, "regularizer": "lab", "reg_weight": 3.0},
}
DEFAULT_STRENGTH = "mid"
PROTECT_DEFAULTS: dict[str, dict] = {
    "alignment": {"steps": 10, "augment": NO_AUGMENTATION},
    "evade": EVASION_DEFAULTS,
    "target": EVASION_DEFAULTS,
    "adversarial": {"steps": 20, "step_size": 0.25, "augment": NO_AUGMENTATION},
    # at least 10 rounds: stopped when its model first fits the faces (often after one round), the
    # noise cut cross-lighting identification by 15-43 % over three seeds, after 10 rounds by 25-27 %
    # (benchmarks/results/faces-cpu-em*.md)
    "error-minimizing-classwise": {**ERROR_MINIMIZING_STEPS, "min_rounds": 10, "augment": NO_AUGMENTATION},
    "synthetic": {"steps": 0, "augment": NO_AUGMENTATION},  # data-free: nothing is optimised
}


# What faceguard poison crafts with when only the method is chosen: the paper's 240 steps × 8 restarts
# for alignment and the baselines; one restart for the poisons that keep each image's best anyway or
# train a model alongside; Unlearnable Examples' small inner steps (ERROR_MINIMIZING_STEPS) for
# error-minimizing noise, as cifar10-cpu-poisons ran it.
POISON_DEFAULTS: dict[str, dict] = {
    "adversarial": {"restarts": 1},
    **{method: {**ERROR_MINIMIZING_STEPS, "restarts": 1} for method in ERROR_MINIMIZING_METHODS},
}


def poison_settings(method: str = DEFAULT_POISON_METHOD, **changes: object) -> CraftSettings:
    """The defaults of ``faceguard poison`` for ``method`` (:data:`POISON_DEFAULTS` over the
    paper's :class:`CraftSettings`); ``changes`` override them."""
    return CraftSettings(**{"method": method, **POISON_DEFAULTS.get(method, {}), **changes})


def protect_settings(method: str = DEFAULT_PROTECT_METHOD, strength: str = DEFAULT_STRENGTH,
                     **changes: object) -> CraftSettings:
    """The defaults of ``faceguard protect`` for ``method`` (:data:`PROTECT_DEFAULTS`): ε = 16, one
    restart, the ``fd-frozen`` backend, and the method's steps, step size and augmentation; for an
    evasion method also the shaping of ``strength`` (:data:`STRENGTHS`); ``changes`` override them."""
    if method not in PROTECT_METHODS:
        raise ValueError(f"protect crafts with one of {', '.join(PROTECT_METHODS)}; got method {method!r}")
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose from {', '.join(STRENGTHS)}")
    shaping = STRENGTHS[strength] if method in EVASION_METHODS else {}
    return CraftSettings(**{"eps": 16.0, "restarts": 1, "backend": PROTECT_BACKEND, "method": method,
                            **PROTECT_DEFAULTS[method], **shaping, **changes})
