"""The choices the page offers, read from the command line's own options, so the page shows the
same defaults and help text as ``faceguard protect --help`` and ``faceguard check --help``.

The server protects each photo on its own as it arrives, so it offers the methods that need
nothing but the photo (:data:`SERVE_METHODS`): ``target`` needs a folder of other people, and the
per-person methods (``error-minimizing-classwise``, ``synthetic``) learn over a whole folder first;
those stay with ``faceguard protect``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from faceguard.protect.check import CAVEAT, CHECK_IDENTITIES, MODEL, THRESHOLD
from faceguard.serve.uploads import Limits, UploadError
from faceguard.settings import (DEFAULT_PROTECT_METHOD, DEFAULT_STRENGTH, EVASION_METHODS, PROTECT_CORPUS_METHODS,
                                PROTECT_METHODS, STRENGTHS)
from faceguard.units import check_eps

SERVE_METHODS = tuple(m for m in PROTECT_METHODS if m not in PROTECT_CORPUS_METHODS and m != "target")
DEFAULT_IDENTITIES = "single"  # photos a person drops on the page are theirs


def _actions(add_arguments: Callable[[argparse.ArgumentParser], None]) -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {action.dest: action for action in parser._actions}


def cli_options() -> dict:
    """ε, method, strength and check identities as the CLI defines them (default, help, choices);
    ``strength.methods``: the methods it shapes (the evasion ones; the others ignore it, as in the CLI)."""
    from faceguard.commands import check, protect

    protect_actions, check_actions = _actions(protect.add_arguments), _actions(check.add_arguments)
    eps, method, identities = protect_actions["eps"], protect_actions["method"], check_actions["identities"]
    strength = protect_actions["strength"]
    return {"eps": {"default": eps.default, "help": eps.help, "min": 1, "max": 255},
            "method": {"default": DEFAULT_PROTECT_METHOD, "choices": list(SERVE_METHODS), "help": method.help,
                       "not_served": [m for m in method.choices if m not in SERVE_METHODS]},
            "strength": {"default": DEFAULT_STRENGTH, "choices": list(STRENGTHS), "help": strength.help,
                         "methods": [m for m in SERVE_METHODS if m in EVASION_METHODS]},
            "identities": {"default": DEFAULT_IDENTITIES, "choices": list(identities.choices),
                           "help": identities.help}}


def page_options(limits: Limits) -> dict:
    """``GET /api/options``: the CLI's options, the check's model, threshold and caveat, the limits."""
    return {**cli_options(), "check": {"model": MODEL, "threshold": THRESHOLD, "caveat": CAVEAT},
            "limits": limits.to_dict()}


def parse_options(fields: dict[str, str], default_eps: float) -> tuple[str, float, str, str]:
    """(method, ε, strength, identities) from form fields, the CLI's defaults for those left out; 422 for a
    value the CLI would refuse."""
    method = fields.get("method") or DEFAULT_PROTECT_METHOD
    if method not in SERVE_METHODS:
        raise UploadError(422, f"method {method!r} is not served: choose one of {', '.join(SERVE_METHODS)} "
                               "(the others need a whole folder: use faceguard protect)")
    text = fields.get("eps") or str(default_eps)
    try:
        eps = check_eps(float(text))
    except ValueError as exc:
        raise UploadError(422, f"eps: {exc}" if "eps" not in str(exc) else str(exc)) from exc
    if eps == 0:
        raise UploadError(422, "eps must be at least 1 pixel level (0 allows no change)")
    strength = fields.get("strength") or DEFAULT_STRENGTH
    if strength not in STRENGTHS:
        raise UploadError(422, f"strength must be one of {', '.join(STRENGTHS)}, got {strength!r}")
    identities = fields.get("identities") or DEFAULT_IDENTITIES
    if identities not in CHECK_IDENTITIES:
        raise UploadError(422, f"identities must be one of {', '.join(CHECK_IDENTITIES)}, got {identities!r}")
    return method, eps, strength, identities
