"""``python -m benchmarks faces-partial``: does protecting your own photos help when the rest of
the corpus is clean?

Threat model 1 seen from one person. The face benchmark protects every pre-training identity. Here,
one person ("you": the pre-training identity whose number is the seed) protects only their own
photos, and everyone else's stay clean. Per seed, three victims are trained with the faces recipe
(same initialisation and data order):

- ``clean``: on the clean pre-training set;
- ``METHOD-one``: only your images replaced by their copy from the method's protected corpus;
- ``METHOD-all``: everyone's images replaced, as in ``python -m benchmarks faces``.

Measured on your clean images, which the victims saw only in their training form:

- ``own_cls_acc``: the victim's classifier names you (the recognizer that was trained, closed set);
- ``own_cross_light_top1``: your photos lit more than 12.5° off the camera axis are identified
  against the frontally lit photos of every pre-training person (the victim's embeddings as a
  search engine for you, open set; neighbouring lighting cannot help);
- ``top1`` and ``cross_light_top1`` on the test identities, as in the face benchmark (context).

Results: ``benchmarks/results/faces-partial-METHOD.{json,md}``; ``.findings.md`` is appended.
Yale B only (the lighting of each photo names the gallery).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.faces_configs import CONFIGS, resolve_config, set_overrides
from benchmarks.results import RESULTS_DIR, format_cell, markdown_table, summarize, write_markdown, write_results
from recognition.cli import add_data_option, add_device_option, add_out_option, add_set_option

if TYPE_CHECKING:
    import torch

    from benchmarks.faces_configs import FacesConfig
    from benchmarks.faces_pipeline import FaceData
    from recognition.datasets import ImageTensorDataset
    from recognition.heads import MarginClassifier

METRICS = ["own_cls_acc", "own_cross_light_top1", "top1", "cross_light_top1"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Config, method, ε, seeds, data and output folders."""
    parser.add_argument("--config", choices=sorted(CONFIGS), default="faces-cpu")
    parser.add_argument("--method", default="synthetic",
                        help="a crafting method label the face benchmark accepts (default: synthetic)")
    parser.add_argument("--eps", type=int, default=16, help="ε in 0-255 units")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds; seed s protects pre-training identity s")
    parser.add_argument("--identities", type=int, help="use only this many identities (smoke runs)")
    add_data_option(parser)
    add_set_option(parser, "override any config field")
    add_device_option(parser)
    add_out_option(parser, "folder for faces-partial-METHOD.json/.md", default=RESULTS_DIR)


def protect_only(clean: ImageTensorDataset, protected: ImageTensorDataset, identity: int) -> ImageTensorDataset:
    """``clean`` with the images of ``identity`` taken from ``protected`` (same order and labels)."""
    from recognition.datasets import ImageTensorDataset

    images = clean.images.clone()
    mask = clean.labels == identity
    images[mask] = protected.images[mask]
    return ImageTensorDataset(images, clean.labels, clean.classes)


def own_metrics(victim: MarginClassifier, data: FaceData, frontal: torch.Tensor, identity: int,
                config: FacesConfig) -> dict[str, float]:
    """``own_cls_acc`` and ``own_cross_light_top1`` of ``victim`` for ``identity`` (see the module)."""
    import torch

    from recognition.embeddings import extract_embeddings
    from recognition.identification import gallery_identification
    from recognition.training import evaluate_accuracy

    mine = data.pretrain.labels == identity
    keep = torch.nonzero(frontal | mine).flatten()
    embeddings = extract_embeddings(victim.backbone, data.pretrain.images[keep], batch_size=config.eval_batch)
    search = gallery_identification(embeddings, data.pretrain.labels[keep], frontal[keep], ks=(1,))
    accuracy = evaluate_accuracy(victim, data.pretrain.subset(torch.nonzero(mine).flatten()), config.eval_batch)
    return {"own_cls_acc": round(accuracy, 4), "own_cross_light_top1": search.accuracy[1]}


def run(args: argparse.Namespace) -> int:
    """Every seed's three victims, then the results files; returns 0."""
    from benchmarks.faces_pipeline import (alignment_target, build_face_model, craft, evaluate_victim, load_face_data,
                                           restrict_identities, train_face_model, yaleb_frontal)
    from faceguard.registry import is_data_free
    from faceguard.settings import CraftSettings
    from recognition.datasets import default_data_dir
    from recognition.device import resolve_device

    config = resolve_config(args.config, **set_overrides(args.config, args.set))
    if config.data != "yaleb":
        raise ValueError(f"faces-partial needs Yale B's lighting; config {config.name} uses {config.data}")
    data_dir, device, start = args.data or default_data_dir(), resolve_device(args.device), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="faces-partial-") as work:
        data = load_face_data(config, data_dir, None, None, Path(work))
    frontal = yaleb_frontal(data_dir / "yaleb_cropped.npz", config, part="pretrain")
    if args.identities:
        frontal = frontal[data.pretrain.labels < args.identities]
        data = restrict_identities(data, args.identities)
    classes = len(data.pretrain.classes)
    settings = CraftSettings.from_label(args.method, eps=args.eps)
    data_free = is_data_free(settings.method)
    runs = []
    for seed in args.seeds:
        identity = seed % classes
        surrogate = build_face_model(config, config.surrogate, config.surrogate_width, classes, seed)
        if not data_free:  # a drawn pattern needs only the class count
            train_face_model(surrogate, data.pretrain, config, config.surrogate_epochs, seed, device)
        surrogate.eval()
        target = alignment_target(surrogate, data.pretrain, config) if settings.method == "alignment" else None
        protected, _ = craft(config, args.method, surrogate, target, data.pretrain, args.eps, seed)
        sets = {"clean": data.pretrain, f"{args.method}-one": protect_only(data.pretrain, protected, identity),
                f"{args.method}-all": protected}
        for label, train_set in sets.items():
            victim = build_face_model(config, config.victim, config.victim_width, classes, 1000 + seed)
            train_face_model(victim, train_set, config, config.victim_epochs, 1000 + seed, device)
            victim.eval()
            run = {"method": label, "eps": 0 if label == "clean" else args.eps, "victim": config.victim,
                   "defense": "none", "seed": seed, "identity": data.pretrain.classes[identity],
                   **own_metrics(victim, data, frontal, identity, config), **evaluate_victim(victim, data, config)}
            print(f"seed {seed} {label}: " + ", ".join(f"{m} {run[m]:.1f}" for m in METRICS), flush=True)
            runs.append(run)
    _write(args, config, summarize(runs, METRICS), round(time.perf_counter() - start), str(device))
    return 0


def _write(args: argparse.Namespace, config: FacesConfig, rows: list[dict], seconds: int, device: str) -> None:
    """Results JSON and the Markdown table (with the findings file appended when present)."""
    name = f"faces-partial-{args.method}"
    record = {"config": config.name, "method": args.method, "eps": args.eps, "seeds": args.seeds,
              "identities_limit": args.identities, "seconds": seconds, "device": device}
    path = write_results(name, record, args.command_line, rows, args.out)
    order = ["clean", f"{args.method}-one", f"{args.method}-all"]
    rows = sorted(rows, key=lambda row: order.index(row["method"]))
    lines = [[row["method"], row["eps"], ",".join(map(str, row["seeds"])), *(format_cell(row, m) for m in METRICS)]
             for row in rows]
    text = (f"# Protecting only your own photos: {name}\n\n`{args.command_line}`\n\n"
            f"Config {config.name} (victim {config.victim} ×{config.victim_width}, {config.victim_epochs} epochs); "
            f"ε = {args.eps}; seed s protects pre-training identity s; {seconds} s on {device}.\n\n"
            "own_cls_acc: the victim's classifier on your clean photos (%); own_cross_light_top1: your photos lit "
            "more than 12.5° off axis identified against every pre-training person's frontally lit photos (%); "
            "top1 / cross_light_top1: the face benchmark's identification of the test identities (%).\n\n"
            + markdown_table(["training set", "ε", "seeds", *METRICS], lines))
    write_markdown(path.with_suffix(".md"), text)
