"""``python -m benchmarks <name>``: experiment harness (speed for now)."""
import argparse
import importlib
import shlex
import sys

BENCHMARKS = {"speed": ("benchmarks.speed", "time per crafting step of each gradient backend")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = "python -m benchmarks " + shlex.join(argv)  # recorded in the results
    return importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    sys.exit(main())
