"""The crafting vocabulary: registries, the one settings object, the shared command-line options,
and a ``faceguard --help`` that does not load torch."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from faceguard.registry import BACKENDS, METHODS, OBJECTIVES, REGULARIZERS, is_data_free
from faceguard.settings import PAPER_DECAYS, SETTINGS_VERSION, CraftSettings, protect_settings
from recognition.cli import parse_set
from recognition.registry import Registry

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("registry", [METHODS, BACKENDS, REGULARIZERS, OBJECTIVES], ids=lambda r: r.kind)
def test_every_registered_name_resolves_to_a_callable(registry):
    assert registry.names()
    for name in registry.names():
        assert callable(registry.get(name)), name
    with pytest.raises(ValueError, match=f"unknown {registry.kind} 'nope'; choose from"):
        registry.get("nope")


def test_a_registry_takes_a_name_once_and_imports_lazy_entries_on_use():
    registry = Registry("thing", {"lazy": "json:dumps"})
    registry.register("eager")(len)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("eager")(len)
    assert registry.names() == ["eager", "lazy"] and "lazy" in registry and len(registry) == 2
    import json

    assert registry.get("lazy") is json.dumps and registry.get("eager") is len


def test_data_free_methods_are_the_ones_that_need_no_network():
    assert {name for name in METHODS.names() if is_data_free(name)} == {"random", "autoregressive", "synthetic"}


def test_settings_round_trip_and_refuse_other_versions_and_keys():
    settings = CraftSettings(method="tensorclog", eps=4, steps=3, regularizer="tv", reg_weight=0.5)
    stored = settings.to_dict()
    assert stored["version"] == SETTINGS_VERSION and CraftSettings.from_dict(stored) == settings
    with pytest.raises(ValueError, match="version 1 are not supported"):
        CraftSettings.from_dict({**stored, "version": 1})
    evade = CraftSettings(method="evade", ensemble=("sface",))
    version2 = {key: value for key, value in evade.to_dict().items() if key != "ensemble"} | {"version": 2}
    assert CraftSettings.from_dict(version2) == evade.replace(ensemble=("profile", "dlib-resnet"))
    custom = CraftSettings(method="evade", ensemble=("sface",), decay_at=[0.75])
    assert custom.decay_at == (0.75,) and CraftSettings.from_dict(custom.to_dict()) == custom
    version3 = {key: value for key, value in custom.to_dict().items() if key != "decay_at"} | {"version": 3}
    assert CraftSettings.from_dict(version3) == custom.replace(decay_at=PAPER_DECAYS)  # what version 3 ran
    shaped = custom.replace(chroma=0.0, budget_floor=0.4, feather=0.1, grid=128)
    assert shaped.shaped and not custom.shaped and CraftSettings.from_dict(shaped.to_dict()) == shaped
    version4 = {key: value for key, value in shaped.to_dict().items()
                if key not in ("chroma", "budget_floor", "feather", "grid")} | {"version": 4}
    assert CraftSettings.from_dict(version4) == custom  # what version 4 ran: unshaped, on the profile's grid
    assert CraftSettings(method="alignment", grid=128).grid == 0  # only evasion has a grid of its own
    for bad in ({"chroma": 1.5}, {"budget_floor": -0.1}, {"feather": 0.5}, {"grid": 8}):
        with pytest.raises(ValueError):
            CraftSettings(method="evade", **bad)
    for bad in ([0.5, 0.25], [0.0], [1.0], [0.5, 0.5]):
        with pytest.raises(ValueError, match="decay_at"):
            CraftSettings(decay_at=bad)
    assert settings.ensemble == () and stored["ensemble"] == []  # methods without an ensemble store none
    with pytest.raises(ValueError, match="unknown crafting settings: colour"):
        CraftSettings.from_dict({**stored, "colour": "red"})
    assert CraftSettings(regularizer="none", reg_weight=5).reg_weight == 0.0  # no penalty, no weight
    assert CraftSettings.from_label("alignment-independent").variant == "independent"
    assert CraftSettings.from_label("random").label == "random"
    assert protect_settings(steps=3).eps == 16 and protect_settings("alignment").steps == 10


@pytest.mark.parametrize("change", [{"method": "magic"}, {"backend": "magic"}, {"objective": "mse"},
                                    {"regularizer": "blur"}, {"variant": "sideways"}, {"steps": -1},
                                    {"restarts": 0}, {"batch_size": 0}, {"eps": 0.03}, {"method": "evade", "ensemble": ()},
                                    {"method": "evade", "ensemble": ("sface", "sface")}, {"ensemble": ("facenet",)}])
def test_settings_refuse_unknown_names_and_bad_values(change):
    with pytest.raises(ValueError):
        CraftSettings(**change)


def test_command_line_choices_are_the_registries():
    from faceguard.cli import COMMANDS
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS["poison"][0]).add_arguments(parser)
    choices = {a.dest: a.choices for a in parser._actions if a.choices}
    from faceguard.registry import EVASION_METHODS

    # every method but evasion (which protects photos against pretrained recognizers, not datasets)
    assert list(choices["method"]) == [m for m in METHODS.names() if m not in EVASION_METHODS]
    assert list(choices["backend"]) == BACKENDS.names()
    assert set(choices["regularizer"]) == {"none", *REGULARIZERS.names()}


def test_poison_options_default_per_method():
    """``faceguard poison`` takes the paper's settings for alignment and each other method's own
    (``POISON_DEFAULTS``); options given always win."""
    import argparse

    from faceguard.commands import poison
    from faceguard.commands.crafting import settings_from_args
    from faceguard.settings import DEFAULT_POISON_METHOD, poison_settings

    parser = argparse.ArgumentParser()
    poison.add_arguments(parser)

    def settings(*argv: str) -> CraftSettings:
        args = parser.parse_args(["data", "--out", "x", *argv])
        return settings_from_args(args, poison_settings)

    paper = settings("--method", "alignment")
    assert (paper.steps, paper.restarts, paper.step_size) == (240, 8, 0.1)
    em = settings("--method", "error-minimizing-classwise")
    assert (em.method, em.steps, em.restarts, em.step_size) == ("error-minimizing-classwise", 10, 1, 0.1)
    assert settings("--method", "error-minimizing", "--steps", "3").steps == 3
    assert settings("--method", "random").method == "random" and settings().method == DEFAULT_POISON_METHOD
    assert paper.decay_at == (0.375, 0.625, 0.875) and settings("--decay-at", "0.5", "0.75").decay_at == (0.5, 0.75)


def test_protect_options_default_per_method():
    """``faceguard protect`` fills options left out from the chosen method's defaults
    (``PROTECT_DEFAULTS``); options given always win."""
    import argparse

    from faceguard.commands import protect
    from faceguard.commands.crafting import settings_from_args
    from faceguard.settings import protect_settings

    parser = argparse.ArgumentParser()
    protect.add_arguments(parser)

    def settings(*argv: str) -> CraftSettings:
        return settings_from_args(parser.parse_args(["photos", *argv]), protect_settings)

    alignment = settings("--method", "alignment")
    assert alignment == protect_settings("alignment") and alignment.steps == 10 and alignment.augment == "none"
    assert alignment.ensemble == ()  # only evasion reads an ensemble
    assert settings() == protect_settings() == protect_settings("evade")  # evade is protect's default
    assert settings().ensemble == ("profile", "dlib-resnet", "sface")
    assert settings("--method", "alignment", "--regularizer", "ssim").reg_weight == 0.1
    evade = settings("--method", "evade")
    assert (evade.steps, evade.step_size, evade.augment, evade.reg_weight) == (33, 0.25, "scraper", 1.5)
    assert evade.decay_at == (0.67,)
    assert evade == protect_settings("evade")
    assert settings("--method", "evade", "--steps", "5", "--augment", "none").steps == 5
    assert settings("--method", "alignment", "--decay-at", "0.6").decay_at == (0.6,)
    assert settings("--method", "evade", "--ensemble", "sface", "dlib-resnet").ensemble == ("sface", "dlib-resnet")
    with pytest.raises(ValueError, match="one of alignment, evade, target, adversarial"):
        protect_settings("tensorclog")


@dataclass
class _Config:
    name: str = "x"
    steps: int = 1
    rate: float = 0.1
    augment: bool = False
    limit: int | None = None
    eps: tuple[int, ...] = (8,)


def test_set_pairs_are_typed_by_the_config_fields():
    changes = parse_set(["steps=40", "rate=0.5", "augment=true", "limit=none", "eps=4,8,16"], _Config(),
                        frozen=("name",))
    assert changes == {"steps": 40, "rate": 0.5, "augment": True, "limit": None, "eps": (4, 8, 16)}
    for bad in ("name=y", "steps", "unknown=1", "augment=maybe", "steps=many"):
        with pytest.raises(ValueError, match="--set"):
            parse_set([bad], _Config(), frozen=("name",))


def test_help_does_not_load_torch():
    """``faceguard --help`` only parses arguments: no torch import (which alone takes seconds)."""
    code = ("import sys\nfrom faceguard.cli import main\n"
            "for command in ([], ['protect'], ['poison'], ['fit'], ['verify'], ['check']):\n"
            "    try:\n        main([*command, '--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_strengths_shape_evasion_only_and_explicit_options_win():
    from faceguard.settings import DEFAULT_STRENGTH, STRENGTHS

    assert DEFAULT_STRENGTH in STRENGTHS and protect_settings() == protect_settings(strength=DEFAULT_STRENGTH)
    high, mid, low = (protect_settings("evade", strength=s) for s in ("high", "mid", "low"))
    assert not high.shaped and high.grid == 0 and high.regularizer == "ssim"  # session 17's default
    assert mid.chroma == 0 and mid.grid == 128 and mid.budget_floor == 1
    assert low.budget_floor < 1 and low.feather > 0 and low.regularizer == "lab"
    assert protect_settings("alignment", strength="low") == protect_settings("alignment", strength="high")
    assert protect_settings("evade", strength="low", budget_floor=0.5).budget_floor == 0.5
    with pytest.raises(ValueError, match="unknown strength"):
        protect_settings("evade", strength="max")
