"""The ``faceguard`` command line. ε is given in 0–255 pixel units (``--eps 16`` means 16/255)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from faceguard.demo import run_demo

    result = run_demo(Path(args.out), Path(args.data) if args.data else None, eps=args.eps,
                      images=args.images, steps=args.steps, epochs=args.epochs, device=args.device,
                      seed=args.seed)
    print(f"surrogate train accuracy {result.surrogate_train_accuracy:.1f}%")
    print(f"alignment loss A: random start {result.alignment_random_start:.3f} -> crafted "
          f"{result.alignment_crafted:.3f} ({result.images} images, {result.seconds_crafting:.0f} s)")
    print(f"max |protected - clean| after 8-bit quantisation: {result.linf_after_quantisation}/255 "
          f"(eps {args.eps:g}/255)")
    print(f"wrote {args.out}/clean.png, {args.out}/protected.png, {args.out}/demo.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceguard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="craft protection for real CIFAR-10 images end to end")
    demo.add_argument("--out", default="demo-output", help="folder for clean/protected PNGs and demo.json")
    demo.add_argument("--data", default=None, help="data bundle folder (default $FACEGUARD_DATA or ../shared/data)")
    demo.add_argument("--eps", type=float, default=8, help="perturbation bound in 0-255 pixel units")
    demo.add_argument("--images", type=int, default=64, help="how many training images to protect")
    demo.add_argument("--steps", type=int, default=40, help="signed-Adam steps")
    demo.add_argument("--epochs", type=int, default=4, help="surrogate training epochs")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"faceguard: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
