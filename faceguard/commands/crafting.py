"""The crafting options shared by ``faceguard poison`` and ``faceguard protect``.

Choices come from the registries (:mod:`faceguard.registry`) and defaults from the command's
:class:`~faceguard.settings.CraftSettings`, so a new method or backend appears here by itself and
``--help`` shows the defaults that will be used. No torch is imported.
"""
from __future__ import annotations

import argparse

from faceguard.registry import AUGMENTATIONS, BACKENDS, METHODS, NO_AUGMENTATION, NO_REGULARIZER, REGULARIZERS, VARIANTS
from faceguard.settings import DEFAULT_REG_WEIGHT, CraftSettings

# the CraftSettings fields these options set (each option's dest is the field's name)
_FIELDS = ("method", "eps", "steps", "restarts", "step_size", "variant", "backend", "augment", "regularizer",
           "reg_weight", "seed")


def add_crafting_options(parser: argparse.ArgumentParser, defaults: CraftSettings,
                         methods: list[str] | None = None) -> None:
    """``--method --eps --steps --restarts --step-size --variant --backend --augment
    --regularizer --reg-weight --seed`` with ``defaults`` shown; ``methods`` limits --method."""
    group = parser.add_argument_group("crafting")
    group.add_argument("--method", choices=methods or METHODS.names(), default=defaults.method,
                       help="crafting method")
    group.add_argument("--eps", type=float, default=defaults.eps,
                       help="perturbation bound in 0-255 pixel levels (16 means 16/255)")
    group.add_argument("--steps", type=int, default=defaults.steps, help="signed-Adam steps")
    group.add_argument("--restarts", type=int, default=defaults.restarts, help="random restarts, the best kept")
    group.add_argument("--step-size", type=float, default=defaults.step_size,
                       help="initial signed-Adam step as a fraction of eps")
    group.add_argument("--variant", choices=VARIANTS, default=defaults.variant,
                       help="alignment: one cosine per batch (joint) or each image alone (independent)")
    group.add_argument("--backend", choices=BACKENDS.names(), default=defaults.backend,
                       help="how the alignment gradient is computed (docs/methods.md)")
    group.add_argument("--augment", choices=[NO_AUGMENTATION, *AUGMENTATIONS.names()], default=defaults.augment,
                       help="views drawn at every step: a victim's training augmentation (flip-translate) or "
                            "what a scraper does to a photo (scraper)")
    group.add_argument("--regularizer", choices=[NO_REGULARIZER, *REGULARIZERS.names()],
                       default=defaults.regularizer, help="visibility penalty added to the objective")
    group.add_argument("--reg-weight", type=float, default=DEFAULT_REG_WEIGHT,
                       help="weight of --regularizer")
    group.add_argument("--seed", type=int, default=defaults.seed, help="crafting seed")


def settings_from_args(args: argparse.Namespace, defaults: CraftSettings) -> CraftSettings:
    """The :class:`CraftSettings` the parsed options describe (``defaults`` for the rest)."""
    return defaults.replace(**{field: getattr(args, field) for field in _FIELDS})
