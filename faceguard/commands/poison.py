"""``faceguard poison DATA_DIR --eps 8 --out OUT_DIR``: protect a classification dataset on disk.

Without ``--surrogate`` a ResNet-18 surrogate is trained on DATA_DIR first (the paper's CIFAR-10
setting) and kept in OUT_DIR/.faceguard-poison/ so a resumed run does not train it again.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from faceguard.backends import BACKENDS, DEFAULT_BACKEND


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", help="ImageFolder tree (<class>/<image>) or CIFAR JPEG tree (train/<class>/...)")
    parser.add_argument("--eps", type=float, default=8, help="perturbation bound in 0-255 pixel units")
    parser.add_argument("--out", required=True, help="output folder: the same tree of PNGs")
    parser.add_argument("--surrogate", default=None, help="surrogate weights (.safetensors checkpoint, or with "
                        "--arch torchvision:NAME a torchvision state dict .pth/.safetensors)")
    parser.add_argument("--arch", default=None, help="e.g. torchvision:resnet18 for plain torchvision weights")
    parser.add_argument("--method", default="alignment",
                        choices=("alignment", "random", "tensorclog", "unlearnable"))
    parser.add_argument("--variant", default="joint", choices=("joint", "independent"),
                        help="alignment variant: one cosine per batch (joint) or per image (independent)")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--step-size", type=float, default=0.1, help="initial signed-Adam step as a fraction of eps")
    parser.add_argument("--no-augment", action="store_true", help="craft without differentiable augmentation")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                        help=f"crafting-gradient backend (default {DEFAULT_BACKEND})")
    parser.add_argument("--regularizer", default="none", choices=("none", "l2", "tv", "ssim"))
    parser.add_argument("--reg-weight", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128, help="images per crafting batch (one joint cosine)")
    parser.add_argument("--chunk-size", type=int, default=25_000,
                        help="images per chunk: unit of resuming and of the per-chunk target gradient")
    parser.add_argument("--target", default="chunk", choices=("chunk", "all"),
                        help="target gradient per chunk (ImageNet setting) or once over all images")
    parser.add_argument("--target-fraction", type=float, default=1.0,
                        help="estimate the target gradient on this random fraction of the images")
    parser.add_argument("--size", type=int, default=None, help="resize (shorter side) and centre-crop to SIZE")
    parser.add_argument("--model", default="resnet18", help="surrogate to train when --surrogate is not given")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--surrogate-epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import torch

    from faceguard.poison import CraftSettings
    from faceguard.poison_folder import STATE_DIR, FolderImages, FolderIndex, PoisonJob, poison_folder, resolve_root
    from faceguard.quantize import eps_from_pixels
    from faceguard.surrogate import load_surrogate
    from recognition.checkpoint import load_model, save_checkpoint
    from recognition.distributed import barrier, init_distributed
    from recognition.models import create_model
    from recognition.training import TrainConfig, train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    eps_from_pixels(args.eps)
    context = init_distributed(args.device)   # torchrun: each process crafts its share of the batches
    device = context.device
    data_dir, out = Path(args.data_dir), Path(args.out)
    index = FolderIndex.scan(resolve_root(data_dir))
    if args.surrogate:
        model = load_surrogate(args.surrogate, args.arch, device=device)
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
    method = f"alignment-{args.variant}" if args.method == "alignment" else args.method
    settings = CraftSettings(steps=args.steps, restarts=args.restarts, step_size=args.step_size,
                             augment=not args.no_augment, backend=args.backend,
                             regularizer=None if args.regularizer == "none" else args.regularizer,
                             reg_weight=args.reg_weight if args.regularizer != "none" else 0.0,
                             batch_size=args.batch_size, seed=args.seed)
    job = PoisonJob(method=method, eps=args.eps, chunk_size=args.chunk_size, target=args.target,
                    target_fraction=args.target_fraction, size=args.size, settings=settings)
    summary = poison_folder(data_dir, out, model.eval(), job, progress=not args.quiet, context=context)
    if not context.is_main:
        return 0
    losses = [c["mean_loss"] for c in summary["chunks"] if c.get("mean_loss") is not None]
    print(f"protected {summary['images']} images in {len(summary['chunks'])} chunk(s) -> {out}"
          + (f"; mean kept loss {sum(losses) / len(losses):.3f}" if losses else ""))
    return 0
