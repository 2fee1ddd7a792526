"""``python -m recognition <command>``: face-recognition tools that know nothing about poisoning.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
those modules import their heavy dependencies inside ``run`` so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib

COMMANDS = {
    "align": ("recognition.align_cli", "detect and align every face of a photo tree to 112x112 crops"),
    "train": ("recognition.train_cli", "train a classifier or a face model (torchrun for several processes)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recognition", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    args = parser.parse_args(argv)
    return importlib.import_module(args.module).run(args)
