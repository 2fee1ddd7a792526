"""``faceguard protect PHOTOS --eps 16``: protect every face of a photo folder into a mirrored tree."""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from faceguard.commands.crafting import add_crafting_options, settings_from_args
from faceguard.settings import DEFAULT_PROTECT_METHOD, DEFAULT_STRENGTH, PROTECT_METHODS, STRENGTHS, protect_settings
from recognition.cli import add_device_option, add_out_option

IDENTITY_MODES = ("folders", "single", "cluster")  # kept in step with faceguard.protect.identities


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", type=Path, help="folder of photos (searched recursively) or one photo")
    add_out_option(parser, "output folder (default: PHOTOS-protected beside PHOTOS)")
    parser.add_argument("--profile", type=Path,
                        help="profile from `faceguard fit` (default: the profile shipped in the package)")
    add_crafting_options(parser, protect_settings, methods=list(PROTECT_METHODS), ensemble=True, strength=True,
                         method_help=f"crafting method (default: {DEFAULT_PROTECT_METHOD}; alignment with --aligned, "
                                     "which evasion does not handle; target pulls each face toward another "
                                     "person of --targets; error-minimizing-classwise learns one "
                                     "perturbation per person over the whole folder first, synthetic "
                                     "draws one block pattern per person)")
    parser.add_argument("--strength", choices=list(STRENGTHS), default=DEFAULT_STRENGTH,
                        help="evasion: how much protection against how much visible change (docs/visibility.md): "
                             "high = colour changes, most protection, most visible; mid = grey changes on a finer "
                             "grid, no colour blotches; low = also less on flat skin, least visible and weakest; "
                             "--eps stays the cap and explicit shaping options override it")
    parser.add_argument("--targets", type=Path, metavar="DIR",
                        help="--method target: photos of other people, one sub-folder per person (e.g. public "
                             "figures); each face is pulled toward the one least like it")
    parser.add_argument("--format", choices=("keep", "png"), default="keep",
                        help="keep each photo's format (JPEG stays JPEG) or write lossless PNG")
    parser.add_argument("--identities", choices=IDENTITY_MODES, default="folders",
                        help="folders: PHOTOS/<person>/ sub-folders are people; single: everything is "
                             "one person; cluster: group faces by embedding and report the groups")
    parser.add_argument("--aligned", action="store_true",
                        help="every image is one pre-cropped face (as for `faceguard fit --aligned`): no "
                             "detection; the image's centre square, resized to the profile's crop size, is the face")
    add_device_option(parser)
    parser.add_argument("--report", action="store_true", help="write OUT/report.html (before/after/difference)")
    parser.add_argument("--no-visibility", dest="visibility", action="store_false",
                        help="leave out the visibility numbers (FLIP and CIEDE2000 of each face against JPEG-90/75 "
                             "re-saves of the original; they cost about three FLIPs of each face box)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from faceguard.protect.folder import FolderOptions, protect_folder
    from faceguard.protect.protector import Protector
    from recognition.distributed import close_distributed, init_distributed

    args.method = args.method or ("alignment" if args.aligned else DEFAULT_PROTECT_METHOD)
    if (args.method == "target") != (args.targets is not None):
        raise ValueError("--method target needs --targets DIR, and --targets only goes with --method target")
    settings = settings_from_args(args, partial(protect_settings, strength=args.strength))
    context = init_distributed(args.device)  # under torchrun: one share of the photos per process
    try:
        protector = Protector(args.profile, settings, device=context.device, aligned=args.aligned)
        if args.targets is not None:
            protector.load_targets(args.targets)
        options = FolderOptions(out=args.out, format=args.format, identities=args.identities, report=args.report,
                                visibility=args.visibility, progress=not args.quiet, command=args.command_line)
        summary = protect_folder(args.photos, protector, options, context)
    finally:
        close_distributed()
    if context.is_main:
        for name, files in summary.clusters.items():
            print(f"protect: {name}: {len(files)} faces in {', '.join(sorted(set(files)))}")
        print(summary.line())
        if args.report:
            print(f"protect: report {summary.out / 'report.html'}")
    return summary.exit_code
