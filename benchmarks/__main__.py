"""``python -m benchmarks <name>``: experiment harness (speed for now)."""
import sys

from recognition.cli import run_command

BENCHMARKS = {"speed": ("benchmarks.speed", "time per crafting step of each gradient backend")}


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m benchmarks", __doc__, BENCHMARKS, argv)


if __name__ == "__main__":
    sys.exit(main())
