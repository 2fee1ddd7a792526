"""``faceguard poison DATA_DIR --eps 8 --out OUT_DIR``: protect a classification dataset on disk.

Without ``--surrogate`` a ResNet-18 surrogate is trained on DATA_DIR first (the paper's CIFAR-10
setting) and kept in OUT_DIR/.faceguard-poison/ so a resumed run does not train it again. Methods
that train their own net alongside the noise (error-minimizing) or use none (random, autoregressive)
take ``--model`` untrained instead.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from faceguard.commands.crafting import add_crafting_options, settings_from_args
from faceguard.registry import EVASION_METHODS, METHODS
from faceguard.settings import DEFAULT_POISON_METHOD, CraftSettings, poison_settings
from recognition.cli import add_device_option, add_out_option


# How long the defaults take, measured (docs/poison.md has the command): shown by --help so a user knows
# before starting whether a corpus run takes minutes or hours.
TIMING = """\
time: with the defaults (error-minimizing-classwise, a width-1.0 ResNet-18 trained alongside),
measured 33.6 min for 200 CIFAR-10 images (all 10 rounds; OMP_NUM_THREADS=2 on 2 CPU cores shared
with two other jobs), about 115 min per 1,000 images on 2 CPU cores (extrapolated: each round trains
on 1,280 images and perturbs every image 10 times; idle cores: roughly 40-60 min, not measured).
Each round prints a line with its accuracy on the perturbed images and the time left; --quiet
prints nothing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = TIMING
    parser.add_argument("data_dir", help="ImageFolder tree (<class>/<image>) or CIFAR JPEG tree (train/<class>/...)")
    add_out_option(parser, "output folder: the same tree of PNGs", required=True)
    parser.add_argument("--surrogate", default=None, help="surrogate weights (.safetensors checkpoint, or with "
                        "--arch torchvision:NAME a torchvision state dict .pth/.safetensors)")
    parser.add_argument("--arch", default=None, help="e.g. torchvision:resnet18 for plain torchvision weights")
    add_crafting_options(parser, poison_settings, methods=[m for m in METHODS.names() if m not in EVASION_METHODS],
                         method_help=f"crafting method (default: {DEFAULT_POISON_METHOD}; docs/poison.md says which "
                                     "to pick)")
    parser.add_argument("--batch-size", type=int, default=CraftSettings.batch_size,
                        help="images per crafting batch (one joint cosine); also the surrogate's training batch")
    parser.add_argument("--chunk-size", type=int, default=25_000,
                        help="images per chunk: unit of resuming and of the per-chunk target gradient")
    parser.add_argument("--target", default="chunk", choices=("chunk", "all"),
                        help="target gradient per chunk (ImageNet setting) or once over all images")
    parser.add_argument("--target-fraction", type=float, default=1.0,
                        help="estimate the target gradient on this random fraction of the images")
    parser.add_argument("--size", type=int, default=None, help="resize (shorter side) and centre-crop to SIZE")
    parser.add_argument("--model", default="resnet18", help="surrogate to train when --surrogate is not given")
    parser.add_argument("--width", type=float, default=1.0, help="surrogate width multiplier")
    parser.add_argument("--surrogate-epochs", type=int, default=40,
                        help="epochs of the surrogate trained without --surrogate")
    parser.add_argument("--lr", type=float, default=0.1, help="surrogate learning rate")
    add_device_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or round lines")


def run(args: argparse.Namespace) -> int:
    import torch

    from faceguard.poison.folder import STATE_DIR, FolderImages, FolderIndex, PoisonJob, poison_folder, resolve_root
    from faceguard.poison.surrogate import load_surrogate
    from recognition.checkpoint import load_model, save_checkpoint
    from recognition.distributed import barrier, init_distributed
    from recognition.models import create_model
    from recognition.training import TrainConfig, train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from_args(args, poison_settings).replace(batch_size=args.batch_size)
    context = init_distributed(args.device)   # torchrun: each process crafts its share of the batches
    device = context.device
    data_dir, out = Path(args.data_dir), args.out
    index = FolderIndex.scan(resolve_root(data_dir))
    job = PoisonJob(settings=settings, chunk_size=args.chunk_size, target=args.target,
                    target_fraction=args.target_fraction, size=args.size)
    if args.surrogate:
        model = load_surrogate(args.surrogate, args.arch, device=device)
    elif not job.needs_trained_surrogate:  # error-minimizing noise trains a fresh copy alongside; data-free
        # methods read only the number of classes off the net: nothing to pre-train
        torch.manual_seed(args.seed)
        model = create_model(args.model, num_classes=len(index.classes), width=args.width).to(device)
    else:
        path = out / STATE_DIR / "surrogate.safetensors"
        if path.exists():
            model = load_model(path, device)
        else:
            torch.manual_seed(args.seed)
            model = create_model(args.model, num_classes=len(index.classes), width=args.width)
            config = TrainConfig(epochs=args.surrogate_epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
            train_classifier(model, FolderImages(index, list(range(len(index.files))), args.size), config,
                             device=device, progress=not args.quiet)
            if context.is_main:
                save_checkpoint(model, path, {"model": args.model, "num_classes": len(index.classes),
                                              "width": args.width, "classes": index.classes})
            barrier(context)
    summary = poison_folder(data_dir, out, model.eval(), job, progress=not args.quiet, context=context)
    if not context.is_main:
        return 0
    losses = [c["mean_loss"] for c in summary["chunks"] if c.get("mean_loss") is not None]
    print(f"protected {summary['images']} images in {len(summary['chunks'])} chunk(s) -> {out}"
          + (f"; mean kept loss {sum(losses) / len(losses):.3f}" if losses else ""))
    return 0
