"""``python -m recognition <command>``: face-recognition tools that know nothing about poisoning.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
those modules import their heavy dependencies inside ``run`` so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys

COMMANDS = {
    "align": ("recognition.align_cli", "detect and align every face of a photo tree to 112x112 crops"),
    "train": ("recognition.train_cli", "train a classifier or a face model (torchrun for several processes)"),
}


def run_command(prog: str, description: str | None, commands: dict[str, tuple[str, str]],
                argv: list[str] | None = None) -> int:
    """Parse ``argv`` for one of ``commands`` (name → (module, help)) and run that module's command.

    The exact command line is kept as ``args.command_line`` so results can record what made them.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in commands.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = f"{prog} {shlex.join(argv)}"
    return importlib.import_module(args.module).run(args)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m recognition", __doc__, COMMANDS, argv)
