"""``python -m benchmarks protect-effect``: does ``faceguard protect`` protect, photo for photo?

The face benchmark (``benchmarks.faces``) crafts on aligned crops in memory; users get photos that
the product pasted back and re-encoded. This closes the loop on the ``faces-cpu`` split:

1. the pre-training identities are written as photo files at Yale B's native 168x192,
   ``WORK/photos-png/<identity>/<n>.png`` and ``WORK/photos-jpeg/<identity>/<n>.jpg`` (Pillow,
   quality 95); the test identities stay clean, as in ``faces-cpu``;
2. the surrogate is a profile fitted by the product's own ``fit_profile`` on the PNG photos (the
   data owner trains on its own data) with the config's model, width, size, epochs, batch size,
   learning rate and embedding;
3. both trees are protected by the product's ``protect_folder`` (``--identities folders``, format
   kept: PNG stays PNG, JPEG is re-encoded with its own tables), per-file outcomes in its manifest;
4. the harness reads the *saved files* back and fits them to the config's size exactly as the
   benchmark prepares Yale B (:func:`benchmarks.faces_pipeline.load_photo_faces`), trains a fresh
   victim per seed and evaluates it with ``evaluate_victim`` on the clean test identities.

Rows: ``clean`` (the clean PNG photos read back; bit-identical to the ``faces-cpu`` crops, which is
checked), ``clean-jpeg`` (the quality-95 JPEG originals: the JPEG arm's own baseline),
``protect-png``, ``protect-jpeg``, ``protect-png-jpeg`` (the protected PNG photos re-saved as
quality-95 JPEG: ``protect-png``'s noise through re-encoding alone), and the crop-level ``alignment-joint`` and ``random`` of the
face benchmark (``faces_pipeline.craft``) with the profile's surrogate at the same ε, against the
same victim seeds; the face benchmark's floor rows (``pixels``, ``untrained``, ``untrained-bn``)
for the same seeds. ``--method adversarial`` protects with the class-targeted poison instead (its
crop-level row is ``adversarial``; results ``protect-effect-adversarial``). ``top1_drop`` is relative to the matching clean row of the same seed. Expensive
steps are cached in WORK (``runs/protect-effect/CONFIG``): photos, profile, protected trees (the
product's own resumable manifest), crop-level sets and every victim's numbers, so a rerun resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from benchmarks.faces_configs import CONFIGS, resolve_config, set_overrides
from benchmarks.results import RESULTS_DIR
from recognition.cli import add_data_option, add_device_option, add_out_option, add_set_option

NAME = "protect-effect"
REFERENCES = ("pixels", "untrained", "untrained-bn")  # the face benchmark's floor rows, same seeds


def crop_methods(method: str) -> tuple[str, str]:
    """The crop-level rows beside the product's: its method as the face benchmark crafts it, and random."""
    return ("alignment-joint" if method == "alignment" else method), "random"


def baselines(method: str) -> dict[str, str | None]:
    """Every row and the clean row its ``top1_drop`` is taken against."""
    return {"clean": None, "clean-jpeg": None, "protect-png": "clean", "protect-jpeg": "clean-jpeg",
            "protect-png-jpeg": "clean-jpeg", **{crop: "clean" for crop in crop_methods(method)},
            **{reference: "clean" for reference in REFERENCES}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Config, data and work folders, protection settings, seeds, smoke-run limits."""
    from faceguard.settings import PROTECT_CLASSIFIER_METHODS, protect_settings

    parser.add_argument("--config", choices=sorted(c for c in CONFIGS if CONFIGS[c].data == "yaleb"),
                        default="faces-cpu")
    add_data_option(parser)
    parser.add_argument("--work", type=Path, help="cache folder (default: runs/protect-effect/CONFIG)")
    parser.add_argument("--eps", type=int, default=16, help="ε in 0-255 units for every protected row")
    parser.add_argument("--method", choices=PROTECT_CLASSIFIER_METHODS, default="alignment",
                        help="faceguard protect's method (results NAME-METHOD beside alignment's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="faceguard protect's crafting steps per photo (default: the method's, "
                             f"{protect_settings('alignment').steps} for alignment)")
    parser.add_argument("--detect", action="store_true",
                        help="let the product detect faces with MTCNN instead of protecting each photo as one "
                             "pre-cropped face (faceguard protect --aligned, the default here)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="victim seeds of the photo rows: clean, clean-jpeg, protect-png, protect-jpeg")
    parser.add_argument("--baseline-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="victim (and crafting) seeds of the crop-level alignment-joint and random rows")
    parser.add_argument("--identities", type=int, help="only this many pre-training and test identities (smoke runs)")
    parser.add_argument("--images", type=int, help="only the first N images of each identity (smoke runs)")
    add_set_option(parser, "override config fields as for `benchmarks faces`")
    add_device_option(parser)
    add_out_option(parser, "folder for protect-effect.json/.md", default=RESULTS_DIR)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Every step (cached in WORK), then the results files; returns 0."""
    import torch

    from benchmarks.faces_pipeline import load_face_data, reference_runs, reported_metrics
    from benchmarks.protect_effect_steps import (JPEG_QUALITY, check_work, crop_level_sets, fit_surrogate,
                                                 protect_trees, read_back, restrict, run_victims, write_photos)
    from recognition.datasets import default_data_dir
    from recognition.device import resolve_device

    from faceguard.settings import protect_settings

    config = resolve_config(args.config, **set_overrides(args.config, args.set))
    suffix = "" if args.method == "alignment" else f"-{args.method}"
    name = NAME + suffix
    work = args.work or Path("runs") / NAME / (config.name + suffix)
    device = resolve_device(args.device)
    data_dir = args.data or default_data_dir()
    steps = args.steps or protect_settings(args.method).steps
    settings = {"config": dataclasses.asdict(config), "eps": args.eps, "steps": steps,
                "aligned": not args.detect, "identities": args.identities, "images": args.images,
                **({"method": args.method} if suffix else {})}
    check_work(work, settings)
    start = time.perf_counter()
    log = lambda line: print(f"{NAME}: {line}", flush=True)  # noqa: E731
    data, native = restrict(load_face_data(config, data_dir, None, None, work), config, data_dir,
                            args.identities, args.images)
    log(f"{len(native)} pre-training photos of {len(native.classes)} identities, {len(data.test)} clean test "
        f"images of {len(data.test.classes)}; work folder {work}")
    files = write_photos(native, work)
    profile = fit_surrogate(work, config, device, args.command_line, log)
    outcomes = protect_trees(work, profile, args.method, args.eps, steps, not args.detect, device, args.quiet, log)
    sets = read_back(work, files, native, config, data, outcomes)
    crop_level_sets(work, config, profile, sets.photos["clean"], args.eps, crop_methods(args.method),
                    args.baseline_seeds, sets, log)
    plan = [(method, 0 if method.startswith("clean") else args.eps, seed) for method in baselines(args.method)
            if method not in REFERENCES
            for seed in (args.baseline_seeds if method in crop_methods(args.method) else args.seeds)]
    metrics = reported_metrics(data)
    runs = run_victims(work, config, data, sets, plan, metrics, device, log)
    runs += [row for seed in args.seeds for row in reference_runs(config, data, seed)]
    extras = {f"protect-{fmt}": outcome.metrics() for fmt, outcome in outcomes.items()}
    record = {**settings, "data_sha256": data.checksums,
              "jpeg_quality": JPEG_QUALITY, "profile": profile.config["training"]["settings"],
              "profile_train_acc": profile.config["training"]["final_epoch"]["train_acc"],
              "seconds": round(time.perf_counter() - start), "device": str(device),
              "threads": torch.get_num_threads()}
    from benchmarks.protect_effect_report import write_report

    path = write_report(name, record, args.command_line, runs, metrics, extras,
                        baselines(args.method), args.out)
    log(f"wrote {path} and {path.with_suffix('.md')} in {time.perf_counter() - start:.0f} s")
    return 0

