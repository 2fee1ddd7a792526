"""The crafting options shared by ``faceguard poison`` and ``faceguard protect``.

Choices come from the registries (:mod:`faceguard.registry`) and defaults from the command's
:class:`~faceguard.settings.CraftSettings`, so a new method or backend appears here by itself and
``--help`` shows the defaults that will be used. No torch is imported.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from faceguard.registry import (AUGMENTATIONS, BACKENDS, ENSEMBLE, EVASION_METHODS, METHODS, NO_AUGMENTATION,
                                NO_REGULARIZER, REGULARIZERS, VARIANTS)
from faceguard.settings import DEFAULT_REG_WEIGHT, NOISE_STARTS, CraftSettings

# the CraftSettings fields these options set (each option's dest is the field's name)
_FIELDS = ("method", "eps", "steps", "restarts", "step_size", "decay_at", "variant", "backend", "augment", "regularizer",
           "reg_weight", "min_rounds", "noise_start", "chroma", "budget_floor", "feather", "grid", "seed", "ensemble")


Defaults = CraftSettings | Callable[[str], CraftSettings]


def _text(value: object) -> str:
    """A default as it is typed on the command line (a sequence: its items, space-separated)."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _default(defaults: Defaults, methods: list[str], field: str) -> tuple[object, str]:
    """An option's argparse default and help suffix: the value itself when every method shares it;
    otherwise None (filled in from the chosen method) and the values: the most common one, then
    the methods that differ from it."""
    if isinstance(defaults, CraftSettings):
        return getattr(defaults, field), ""
    values = {method: getattr(defaults(method), field) for method in methods}
    texts = list(map(_text, values.values()))
    if len(set(texts)) == 1:
        return next(iter(values.values())), ""
    common = max(texts, key=texts.count)
    others: dict[str, list[str]] = {}
    for method, value in values.items():
        if _text(value) != common:
            others.setdefault(_text(value), []).append(method)
    return None, f" (default: {common}" + "".join(f"; {value} for {', '.join(names)}"
                                                   for value, names in others.items()) + ")"


SHAPING_FIELDS = ("chroma", "budget_floor", "feather", "grid", "regularizer")  # what protect's --strength sets


def add_crafting_options(parser: argparse.ArgumentParser, defaults: Defaults, methods: list[str] | None = None,
                         ensemble: bool = False, method_help: str | None = None, strength: bool = False) -> None:
    """``--method --eps --steps --restarts --step-size --variant --backend --augment
    --regularizer --reg-weight --seed`` with their defaults shown; ``methods`` limits --method;
    ``ensemble`` adds ``--ensemble`` (the recognizers evasion crafts against); ``strength``: the
    command has a ``--strength`` that sets the shaping options (:data:`SHAPING_FIELDS`), so they
    default to None (resolved from it) and their help says so. ``defaults`` is one
    :class:`CraftSettings` or a function of the method giving that method's defaults; with a
    function, ``--method`` defaults to None (the command resolves it) and ``method_help`` says how."""
    methods = methods or METHODS.names()

    def default(field: str, among: list[str] | None = None) -> dict:
        value, note = _default(defaults, among or methods, field)
        return {"default": value, "note": note}

    def add(flag: str, help: str, **kwargs: object) -> None:
        field = flag.lstrip("-").replace("-", "_")
        found = default(field)
        if strength and field in SHAPING_FIELDS:
            found = {"default": None, "note": (found["note"] or f" (default: {_text(found['default'])})")[:-1]
                     + "; for evasion: set by --strength)"}
        group.add_argument(flag, default=found["default"], help=help + found["note"], **kwargs)

    group = parser.add_argument_group("crafting")
    if isinstance(defaults, CraftSettings):
        group.add_argument("--method", choices=methods, default=defaults.method, help="crafting method")
    else:
        group.add_argument("--method", choices=methods, default=None, help=method_help or "crafting method")
    add("--eps", "perturbation bound in 0-255 pixel levels (16 means 16/255)", type=float)
    add("--steps", "signed-Adam steps", type=int)
    add("--restarts", "random restarts, the best kept", type=int)
    add("--step-size", "initial signed-Adam step as a fraction of eps", type=float)
    add("--decay-at", "fractions of the steps at which the step size drops 10x", type=float, nargs="+",
        metavar="FRACTION")
    add("--variant", "alignment: one cosine per batch (joint) or each image alone (independent)", choices=VARIANTS)
    add("--backend", "how the alignment gradient is computed (docs/methods.md)", choices=BACKENDS.names())
    add("--augment", "views drawn at every step: a victim's training augmentation (flip-translate) or what a "
        "scraper does to a photo (scraper)", choices=[NO_AUGMENTATION, *AUGMENTATIONS.names()])
    add("--regularizer", "visibility penalty added to the objective", choices=[NO_REGULARIZER, *REGULARIZERS.names()])
    group.add_argument("--reg-weight", type=float, help="weight of --regularizer (default: the method's, else "
                       f"{DEFAULT_REG_WEIGHT})")
    add("--min-rounds", "error-minimizing noise: rounds run before its model fitting the perturbed images "
        "may stop it", type=int)
    add("--noise-start", "error-minimizing noise: its perturbation before the first round", choices=NOISE_STARTS)
    add("--chroma", "shaping: bound of the colour part of the change as a fraction of its budget (0 = grey "
        "changes only, 1 = no colour limit; docs/visibility.md)", type=float)
    add("--budget-floor", "shaping: fraction of eps allowed on flat areas such as skin (texture and edges always "
        "get eps; 1 = eps everywhere)", type=float)
    add("--feather", "shaping: fraction of the face crop's side over which the change fades out at its border",
        type=float)
    add("--grid", "evasion: side in pixels of the face crop grid the change is made on (0 = the profile's crop "
        "size; finer grids give finer, less visible changes on large faces)", type=int)
    add("--seed", "crafting seed", type=int)
    if ensemble:
        found = default("ensemble", [m for m in methods if m in EVASION_METHODS] or None)
        group.add_argument("--ensemble", nargs="+", choices=ENSEMBLE.names(), metavar="RECOGNIZER",
                           default=None if found["default"] is None else list(found["default"]),
                           help=f"recognizers --method evade crafts against (choices: {', '.join(ENSEMBLE.names())}; "
                                "docs/protect.md)" + found["note"])


def settings_from_args(args: argparse.Namespace, defaults: Defaults) -> CraftSettings:
    """The :class:`CraftSettings` the parsed options describe (the method's ``defaults`` for the
    rest and for options left at None)."""
    if isinstance(defaults, CraftSettings):
        base = defaults
    else:  # a method left at None takes the defaults function's own default
        base = defaults(args.method) if args.method else defaults()
    given = {field: getattr(args, field) for field in _FIELDS if getattr(args, field, None) is not None}
    given.setdefault("method", base.method)
    if given.get("regularizer", NO_REGULARIZER) != NO_REGULARIZER and "reg_weight" not in given:
        given["reg_weight"] = base.reg_weight or DEFAULT_REG_WEIGHT  # a regulariser chosen without a weight
    return base.replace(**given)
