"""``python -m recognition train``: train a classifier or a face model, on one or several processes.

Examples::

    python -m recognition train --cifar cifar10_jpeg.tar.gz --model resnet18 --out runs/c10.safetensors
    torchrun --nproc_per_node=2 -m recognition train --npz yaleb_cropped.npz --size 64 \\
        --model ir18 --head cosface --out runs/yaleb.safetensors

Writes ``OUT`` (safetensors weights) with ``OUT.json`` (model, width, head, class names: what
``recognition.checkpoint.load_model`` rebuilds) after every epoch, plus the optimizer state
``OUT.train.safetensors`` / ``OUT.train.json`` so ``--resume`` continues an interrupted run.
With ``--head`` the model is a face backbone producing ``--embedding``-d embeddings under a
margin head, trained with cross entropy on the margin logits. Heavy imports happen in ``run``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from recognition.cli import add_device_option, add_out_option, add_seed_option

if TYPE_CHECKING:
    from recognition.datasets import ImageTensorDataset

HEADS = ("none", "cosface", "arcface", "softmax")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the data, model, optimisation and output options of ``train``."""
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="image-folder tree: one sub-folder of images per class")
    data.add_argument("--npz", type=Path, help="grayscale faces .npz (images, labels, names), e.g. yaleb_cropped.npz")
    data.add_argument("--cifar", type=Path, help="CIFAR-10 tarball or extracted folder (training split)")
    parser.add_argument("--per-class", type=int, help="CIFAR-10: keep the first N images of each class")
    parser.add_argument("--size", type=int, help="resize and centre-crop images to SIZE x SIZE (--data, --npz)")
    parser.add_argument("--model", default="resnet18", help="registry name, e.g. resnet18, ir18 (default: resnet18)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default: 1)")
    parser.add_argument("--head", choices=HEADS, default="none",
                        help="margin head on the model's embedding; none = the model classifies (default)")
    parser.add_argument("--embedding", type=int, default=512, help="embedding size under a head (default: 512)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch, split over processes (default: 128)")
    parser.add_argument("--lr", type=float, default=0.1, help="initial SGD learning rate")
    parser.add_argument("--schedule", choices=("multistep", "cosine"), default="multistep",
                        help="learning-rate schedule")
    parser.add_argument("--augment", choices=("crop_flip", "flip", "none"),
                        help="default: flip for --npz (aligned faces), crop_flip otherwise")
    parser.add_argument("--ghost-batches", type=int, default=1,
                        help="BatchNorm over this many interleaved chunks per batch (emulates that many CPU processes)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default: 0)")
    add_seed_option(parser, "training seed")
    add_out_option(parser, "checkpoint path, e.g. runs/model.safetensors", required=True)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    add_device_option(parser)


def run(args: argparse.Namespace) -> int:
    """Load the data, build the model, train it (rank 0 reports and saves); returns the exit code."""
    import torch

    from recognition.checkpoint import build_model
    from recognition.distributed import barrier, close_distributed, init_distributed
    from recognition.losses import margin_cross_entropy_loss
    from recognition.training import TrainConfig, train_classifier

    context = init_distributed(args.device)
    try:
        dataset = _load_dataset(args)
        model_config = _model_config(args, dataset.images.shape[1:], dataset.classes)
        torch.manual_seed(args.seed)  # DDP then copies rank 0's initial weights to every process
        model = build_model(model_config)
        config = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
            augment=args.augment or ("flip" if args.npz else "crop_flip"), seed=args.seed,
            num_workers=args.workers, ghost_batches=args.ghost_batches, checkpoint=str(args.out),
        )
        history = train_classifier(
            model, dataset, config, device=context.device, progress=context.is_main,
            loss_fn=None if args.head == "none" else margin_cross_entropy_loss,
            resume=args.resume, model_config=model_config,
        )
        if context.is_main:
            print(json.dumps({"processes": context.world_size, "out": str(args.out), **history[-1]}))
        barrier(context)  # every rank is done (rank 0 has saved) before the process group is torn down
    finally:
        close_distributed()
    return 0


def _load_dataset(args: argparse.Namespace) -> ImageTensorDataset:
    """The training set named by --data / --npz / --cifar, as an ImageTensorDataset."""
    from recognition.datasets import load_cifar10, load_image_folder

    if args.data is not None:
        return load_image_folder(args.data, size=args.size)
    if args.npz is not None:
        from recognition.face_datasets import load_npz_faces

        return load_npz_faces(args.npz, size=args.size)
    return load_cifar10(args.cifar, "train", per_class=args.per_class)


def _model_config(args: argparse.Namespace, image_shape: tuple[int, int, int], classes: list[str]) -> dict:
    """Checkpoint config of the model to train (see ``recognition.checkpoint.build_model``).

    Grayscale data gets ``in_channels=1``; IR-ResNet face backbones ("ir*") are sized for square
    inputs whose side is a multiple of 16 (others still work through their adaptive pooling).
    """
    channels, height, width = image_shape
    kwargs = {} if channels == 3 else {"in_channels": channels}
    if args.model.startswith("ir") and height == width and height % 16 == 0:
        kwargs["input_size"] = height
    config = {"model": args.model, "width": args.width, "model_kwargs": kwargs, "classes": list(classes)}
    if args.head == "none":
        return {**config, "num_classes": len(classes)}
    return {**config, "num_classes": args.embedding, "head": args.head, "head_classes": len(classes)}
