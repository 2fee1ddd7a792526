"""``faceguard demo``: craft protection for real CIFAR-10 images end to end (the quick smoke run)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", help="folder for clean/protected PNGs and demo.json")
    parser.add_argument("--data", default=None, help="data bundle folder (default $FACEGUARD_DATA or ../shared/data)")
    parser.add_argument("--eps", type=float, default=8, help="perturbation bound in 0-255 pixel units")
    parser.add_argument("--images", type=int, default=64, help="how many training images to protect")
    parser.add_argument("--steps", type=int, default=40, help="signed-Adam steps")
    parser.add_argument("--epochs", type=int, default=4, help="surrogate training epochs")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
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
