"""The crafting options shared by ``faceguard poison`` and ``faceguard protect``.

Choices come from the registries (:mod:`faceguard.registry`) and defaults from the command's
:class:`~faceguard.settings.CraftSettings`, so a new method or backend appears here by itself and
``--help`` shows the defaults that will be used. No torch is imported.
"""
from __future__ import annotations

import argparse

from faceguard.registry import BACKENDS, METHODS, NO_REGULARIZER, REGULARIZERS, VARIANTS
from faceguard.settings import CraftSettings

# option → CraftSettings field, for the options given as plain values
_FIELDS = {"method": "method", "eps": "eps", "steps": "steps", "restarts": "restarts", "step_size": "step_size",
           "variant": "variant", "backend": "backend", "regularizer": "regularizer", "reg_weight": "reg_weight",
           "seed": "seed"}


def add_crafting_options(parser: argparse.ArgumentParser, defaults: CraftSettings,
                         methods: list[str] | None = None) -> None:
    """``--method --eps --steps --restarts --step-size --variant --backend --augment/--no-augment
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
    group.add_argument("--augment", action=argparse.BooleanOptionalAction, default=defaults.augment,
                       help="differentiable flip + translation at every step")
    group.add_argument("--regularizer", choices=[NO_REGULARIZER, *REGULARIZERS.names()],
                       default=defaults.regularizer, help="visibility penalty added to the objective")
    group.add_argument("--reg-weight", type=float, default=CraftSettings.reg_weight,
                       help="weight of --regularizer")
    group.add_argument("--seed", type=int, default=defaults.seed, help="crafting seed")


def settings_from_args(args: argparse.Namespace, defaults: CraftSettings) -> CraftSettings:
    """The :class:`CraftSettings` the parsed options describe (``defaults`` for the rest)."""
    return defaults.replace(augment=args.augment, **{field: getattr(args, option) for option, field in _FIELDS.items()})
