"""Command-line plumbing shared by ``python -m recognition``, ``faceguard`` and ``python -m benchmarks``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
those modules import their heavy dependencies inside ``run`` so ``--help`` stays fast. The option
helpers below give every command the same spelling, type and help for the options they share
(``--data``, ``--out``, ``--device``, ``--seed``, ``--set``), and every ``--help`` shows defaults.
Lists are space-separated (``--eps 4 8 16``); only a ``--set`` value holds a comma-separated list.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shlex
import sys
import typing
from pathlib import Path

COMMANDS = {
    "align": ("recognition.align_cli", "detect and align every face of a photo tree to 112x112 crops"),
    "train": ("recognition.train_cli", "train a classifier or a face model (torchrun for several processes)"),
}
DATA_HELP = "data bundle folder (default: $FACEGUARD_DATA, else ../shared/data)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless it is None or False, or the help already says it; a
    list or tuple as it is typed, space-separated) and keeps descriptions' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in (action.help or ""):
            return action.help or ""
        if isinstance(action.default, (list, tuple)):
            return f"{action.help or ''} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def run_command(prog: str, description: str | None, commands: dict[str, tuple[str, str]],
                argv: list[str] | None = None) -> int:
    """Parse ``argv`` for one of ``commands`` (name → (module, help)) and run that module's command.

    The exact command line is kept as ``args.command_line`` so results can record what made them.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in commands.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = invocation(prog, argv)
    return importlib.import_module(args.module).run(args)


def invocation(prog: str, argv: list[str]) -> str:
    """The command line that started this process: ``prog ARGS``, or under torchrun (``WORLD_SIZE``
    above 1) the torchrun line with its process counts and the ``-m`` module that was run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return f"{prog} {shlex.join(argv)}"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name.removesuffix(".__main__") if spec is not None else prog
    nodes = f" --nnodes={world // local}" if world > local else ""
    return f"torchrun{nodes} --nproc_per_node={local} -m {module} {shlex.join(argv)}"


def add_data_option(parser: argparse.ArgumentParser, help: str = DATA_HELP) -> None:
    """``--data PATH`` (None when not given: the command picks its default)."""
    parser.add_argument("--data", type=Path, default=None, help=help)


def add_out_option(parser: argparse.ArgumentParser, help: str, default: Path | str | None = None,
                   required: bool = False) -> None:
    """``--out PATH``: where a command writes."""
    parser.add_argument("--out", type=Path, default=None if default is None else Path(default), required=required,
                        help=help)


def add_device_option(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--device``: auto (CUDA when available), cpu, cuda or cuda:N."""
    parser.add_argument("--device", default=default, help="auto (CUDA when available), cpu, cuda or cuda:N")


def add_seed_option(parser: argparse.ArgumentParser, help: str = "random seed") -> None:
    """``--seed N``."""
    parser.add_argument("--seed", type=int, default=0, help=help)


def add_set_option(parser: argparse.ArgumentParser, help: str = "override config fields") -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]`` (repeatable); parse with :func:`parse_set`."""
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"{help}, e.g. --set steps=40 eps=4,8 (tuples comma-separated, booleans true/false)")


def parse_set(pairs: list[str], config: object, frozen: tuple[str, ...] = ()) -> dict[str, object]:
    """``KEY=VALUE`` strings → typed changes of the dataclass instance ``config``.

    Types follow the field annotations: bool (``true``/``false``), int, float, str, optional
    scalars (``none`` for None) and tuples of scalars (comma-separated). Fields in ``frozen`` and
    fields of other types cannot be set; an unknown or ill-typed pair raises ``ValueError``.
    """
    hints = typing.get_type_hints(type(config))
    settable = {f.name for f in dataclasses.fields(config) if f.name not in frozen and _scalar(hints[f.name])}
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in settable:
            raise ValueError(f"--set {pair}: expected KEY=VALUE with KEY one of {', '.join(sorted(settable))}")
        try:
            changes[key] = _convert(text, hints[key])
        except ValueError as err:
            raise ValueError(f"--set {pair}: {err}") from None
    return changes


def _scalar(hint: object) -> bool:
    """Whether :func:`_convert` can build a value of type ``hint``."""
    args = [a for a in typing.get_args(hint) if a is not Ellipsis and a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return all(a in (int, float, str) for a in args)
    if args:  # Optional[X] / X | None
        return len(args) == 1 and args[0] in (bool, int, float, str)
    return hint in (bool, int, float, str)


def _convert(text: str, hint: object) -> object:
    args = [a for a in typing.get_args(hint) if a is not Ellipsis and a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return tuple(args[0](v) for v in text.split(",") if v)
    if args:
        return None if text.lower() == "none" else _convert(text, args[0])
    if hint is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError("takes true or false")
        return text.lower() == "true"
    return hint(text)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m recognition", __doc__, COMMANDS, argv)
