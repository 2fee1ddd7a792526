"""``faceguard fit CORPUS --out PROFILE``: train a protection profile on your own identity folders."""
from __future__ import annotations

import argparse
from pathlib import Path

from recognition.cli import add_device_option, add_out_option, add_seed_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", type=Path, nargs="+",
                        help="folder(s) of identity sub-folders of photos, or grayscale faces .npz files "
                             "(images, labels, names); identities with the same name are merged")
    add_out_option(parser, "profile to write, e.g. me.safetensors (+ me.json)", required=True)
    parser.add_argument("--aligned", action="store_true",
                        help="inputs are already aligned face crops: resize only, no detection")
    parser.add_argument("--size", type=int, default=64, help="aligned crop side, a multiple of 16")
    parser.add_argument("--model", default="ir18", help="face backbone")
    parser.add_argument("--width", type=float, default=0.25, help="channel width multiplier")
    parser.add_argument("--embedding", type=int, default=512, help="embedding size")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--lr", type=float, default=0.1, help="initial SGD learning rate")
    add_device_option(parser)
    add_seed_option(parser, "training seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from faceguard.profile.fit import FitSettings, fit_profile

    if args.size < 16 or args.size % 16:
        raise ValueError(f"--size must be a positive multiple of 16, got {args.size}")
    settings = FitSettings(size=args.size, model=args.model, width=args.width, embedding=args.embedding,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                           aligned=args.aligned)
    profile = fit_profile(args.corpus, args.out, settings, device=args.device, command=args.command_line,
                          progress=not args.quiet)
    final = profile.config["training"]["final_epoch"]
    faces = sum(source["faces"] for source in profile.config["provenance"]["corpus"])
    print(f"fit: {faces} faces of {len(profile.classes)} identities; train accuracy "
          f"{final['train_acc']:.1f}% after {final['epoch']} epochs; wrote {args.out} and "
          f"{args.out.with_suffix('.json')}")
    return 0
