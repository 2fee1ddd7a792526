"""The ``faceguard`` command line. ε is given in 0–255 pixel units (``--eps 16`` means 16/255)."""
from __future__ import annotations

import sys

from recognition.cli import run_command

COMMANDS = {
    "protect": ("faceguard.commands.protect", "protect every face of a photo folder (mirrored output tree)"),
    "fit": ("faceguard.commands.fit", "train a protection profile (surrogate + target gradient) on identity folders"),
    "poison": ("faceguard.commands.poison", "protect a whole classification dataset (ImageFolder / CIFAR tree)"),
    "verify": ("faceguard.commands.verify", "check original/protected pairs: sizes, L-inf bound, PSNR, SSIM"),
    "check": ("faceguard.commands.check", "does a pretrained recognizer (dlib ResNet) still match protected photos?"),
    "serve": ("faceguard.commands.serve", "local web page and HTTP API that protect photos as they are uploaded"),
    "models": ("faceguard.commands.models", "every model faceguard can load: use, source, licences, installed?"),
}


def main(argv: list[str] | None = None) -> int:
    try:
        return run_command("faceguard", __doc__, COMMANDS, argv)
    except (FileNotFoundError, ValueError) as err:
        print(f"faceguard: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
