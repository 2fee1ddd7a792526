"""``faceguard protect PHOTOS --eps 16``: protect every face of a photo folder into a mirrored tree."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

IDENTITY_MODES = ("folders", "single", "cluster")  # kept in step with faceguard.protect_identities


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", type=Path, help="folder of photos (searched recursively) or one photo")
    parser.add_argument("--eps", type=float, default=16, help="perturbation bound in 0-255 pixel units (default 16)")
    parser.add_argument("--out", type=Path, help="output folder (default: PHOTOS-protected beside PHOTOS)")
    parser.add_argument("--profile", type=Path,
                        help="profile from `faceguard fit` (default: the profile shipped in the package)")
    parser.add_argument("--variant", choices=("independent", "joint"), default="joint",
                        help="joint (default): the faces of a photo share one exact alignment objective; "
                             "independent: each face's gradient norm detached (weaker here)")
    parser.add_argument("--steps", type=int, default=None, help="signed-Adam steps per photo (default 10)")
    parser.add_argument("--restarts", type=int, default=1, help="random restarts, best kept (default 1)")
    parser.add_argument("--regularizer", choices=("none", "l2", "tv", "ssim"), default="none",
                        help="visibility penalty added to the objective (default none)")
    parser.add_argument("--reg-weight", type=float, default=0.1, help="weight of --regularizer (default 0.1)")
    parser.add_argument("--format", choices=("keep", "png"), default="keep",
                        help="keep each photo's format (JPEG stays JPEG) or write lossless PNG")
    parser.add_argument("--identities", choices=IDENTITY_MODES, default="folders",
                        help="folders: PHOTOS/<person>/ sub-folders are people; single: everything is "
                             "one person; cluster: group faces by embedding and report the groups")
    parser.add_argument("--aligned", action="store_true",
                        help="every image is one pre-cropped face (as for `faceguard fit --aligned`): no "
                             "detection; the image's centre square, resized to the profile's crop size, is the face")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="write OUT/report.html (before/after/difference)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from faceguard.protect import DEFAULT_STEPS, Protector
    from faceguard.protect_folder import FolderOptions, protect_folder

    if args.steps is not None and args.steps < 0 or args.restarts < 1:
        print("protect: error: --steps must be >= 0 and --restarts >= 1", file=sys.stderr)
        return 2
    protector = Protector(args.profile, eps=args.eps, steps=DEFAULT_STEPS if args.steps is None else args.steps,
                          restarts=args.restarts, variant=args.variant, regularizer=args.regularizer,
                          reg_weight=args.reg_weight if args.regularizer != "none" else 0.0,
                          device=args.device, seed=args.seed, aligned=args.aligned)
    options = FolderOptions(out=args.out, format=args.format, identities=args.identities, report=args.report,
                            progress=not args.quiet, command=args.command_line)
    summary = protect_folder(args.photos, protector, options)
    for name, files in summary.clusters.items():
        print(f"protect: {name}: {len(files)} faces in {', '.join(sorted(set(files)))}")
    print(summary.line())
    if args.report:
        print(f"protect: report {summary.out / 'report.html'}")
    return summary.exit_code
