"""``python -m benchmarks recognizers``: do recognizers still know people from protected photos?

Real colour photos (the bundle's ``realfaces/`` and ``photos/``, people with ≥ 2 photos) are split
per person (:mod:`benchmarks.recognizers_data`): every other photo in manifest order is *released*
and protected by the product itself (``Protector`` + ``protect_folder``, as ``faceguard protect``:
format kept, person folders as identities), the rest stay clean as *probes*. Then, per method
(``clean`` = nothing protected), ε, defense (none, JPEG-75 re-save, half-size downscale of the
released photos) and recognizer (:mod:`benchmarks.recognizers_models`):

- gallery (threat model 2): the released photos are enrolled and the clean probes matched at the
  recognizer's threshold and identified by nearest neighbour;
- scraper fit (threat model 3): classifiers fitted on the released photos, tested on the probes;
- quality of the protected photos (SSIM/PSNR, whole photo and face crop) and seconds per photo.

Definitions: :mod:`benchmarks.recognizers_metrics`. Nothing is fitted on a person's own photos but
the scraper's classifier (that *is* the threat): a fitted cosine threshold comes from other people.
Writes ``OUT/NAME.json`` (shared results format, one row per metric), ``OUT/NAME.md`` and
``OUT/NAME.png`` (before / after / amplified difference). Protection resumes from WORK.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.results import RESULTS_DIR
from faceguard.registry import EVASION_METHODS, is_data_free
from recognition.cli import add_data_option, add_device_option, add_out_option

if TYPE_CHECKING:
    from benchmarks.recognizers_data import Sample
    from benchmarks.recognizers_models import Embeddings

NAME = "recognizers"
# Protections compared, label -> (method, changes to the product's defaults for it): alignment as
# shipped; evasion over two ensembles (the second adds sface, leaving insightface-mbf held out),
# without and with the SSIM regulariser, at 20 steps (the product's default until session 12), at
# 40 (-s40; evade-sface-ssim-s40 was the default in sessions 12-13), at 30 (-s30, a speed
# trade-off) and at 60 with weights 1.5 and 2 (-s60: session 13's default and its looks-for-time
# twin); with one 10x step-size drop instead of the paper's three, at 37 steps (-s37-decay0.6: the
# product's default in sessions 14-16, the 60-step run's first 37 steps), at 33 (-s33-decay0.67: the
# same first 22 steps, then 11 small ones; the default's steps since session 17, also at SSIM weights
# 1 and 2) and at 30 (-s30-decay0.75);
# targeted evasion with the settings of a default, toward ORL's people (recognizers_data.write_targets).
# A label's changes apply to the paper's step-size schedule unless they name ``decay_at``.
SFACE = ["profile", "dlib-resnet", "sface"]
PROTECTIONS = {
    "alignment": ("alignment", {}),
    "synthetic": ("synthetic", {}),  # one drawn pattern per person folder (threat model 1's method)
    "evade": ("evade", {"ensemble": ["profile", "dlib-resnet"], "regularizer": "none", "steps": 20}),
    "evade-sface": ("evade", {"ensemble": SFACE, "regularizer": "none", "steps": 20}),
    "evade-sface-ssim": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 1.0, "steps": 20}),
    "evade-sface-ssim0.3": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 0.3, "steps": 20}),
    "target-sface-ssim0.3": ("target", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 0.3, "steps": 20}),
    "target-sface-ssim-s40": ("target", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 1.0, "steps": 40}),
    "evade-sface-ssim0.3-s40": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 0.3, "steps": 40}),
    "evade-sface-ssim-s30": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 1.0, "steps": 30}),
    "evade-sface-ssim-s40": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 1.0, "steps": 40}),
    "evade-sface-ssim2-s40": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 2.0, "steps": 40}),
    "evade-sface-ssim1.5-s60": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 1.5, "steps": 60}),
    "evade-sface-ssim2-s60": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 2.0, "steps": 60}),
    "evade-sface-ssim3-s40": ("evade", {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 3.0, "steps": 40}),
    **{f"evade-sface-ssim{weight:g}-s30-decay0.75": ("evade", {"ensemble": SFACE, "regularizer": "ssim",
                                                              "reg_weight": weight, "steps": 30, "decay_at": [0.75]})
       for weight in (1.5, 1.75, 2.0)},
    "evade-sface-s30-decay0.75": ("evade", {"ensemble": SFACE, "regularizer": "none", "steps": 30, "decay_at": [0.75]}),
    **{f"{method}-sface-ssim1.5-s37-decay0.6": (method, {"ensemble": SFACE, "regularizer": "ssim", "reg_weight": 1.5,
                                                         "steps": 37, "decay_at": [0.6]})
       for method in ("evade", "target")},
    **{f"evade-sface-ssim{weight:g}-s33-decay0.67": ("evade", {"ensemble": SFACE, "regularizer": "ssim",
                                                              "reg_weight": weight, "steps": 33, "decay_at": [0.67]})
       for weight in (1.0, 1.5, 2.0)},
}
# session 14-16's default and today's crafted with seeds 1 and 2 (-seed1, -seed2: other random
# scraper views, the crafting noise)
PROTECTIONS.update({f"{label}-seed{seed}": ("evade", {**PROTECTIONS[label][1], "seed": seed})
                    for label in ("evade-sface-ssim1.5-s37-decay0.6", "evade-sface-ssim1.5-s33-decay0.67")
                    for seed in (1, 2)})
# Session 20's perceptual shaping (faceguard.shaping) over the session-17 default (-s33-decay0.67):
# -luma: grey changes only (chroma 0) on a 128-pixel crop grid; -masked-lab adds the
# photo-resolution budget map (0.3 of ε on flat skin, feathered over the outer 0.1 of the crop)
# and the CIELAB penalty at weight 3 in place of SSIM; -masked-free the same budget map with no
# regulariser (the map alone limits what shows). Each also at crafting seeds 1 and 2.
MASK = {"chroma": 0.0, "grid": 128, "budget_floor": 0.3, "feather": 0.1}
SHAPINGS = {"luma": {"chroma": 0.0, "grid": 128},
            "masked-lab": {**MASK, "regularizer": "lab", "reg_weight": 3.0},
            "masked-free": {**MASK, "regularizer": "none"}}
PROTECTIONS.update({f"evade-{name}": ("evade", {**PROTECTIONS["evade-sface-ssim1.5-s33-decay0.67"][1], **changes})
                    for name, changes in SHAPINGS.items()})
PROTECTIONS.update({f"evade-{name}-seed{seed}": ("evade", {**PROTECTIONS[f"evade-{name}"][1], "seed": seed})
                    for name in SHAPINGS for seed in (1, 2)})
# listed in the report (+ evasion's ensemble)
SHOWN = ("steps", "step_size", "decay_at", "augment", "regularizer", "reg_weight", "chroma", "budget_floor", "feather",
         "grid", "seed")
METHODS = tuple(PROTECTIONS)
HALVES = ("tuning", "held-out")  # the people split of session 20 (recognizers_data.half_of)
DATASET_CHOICES = ("realfaces", "photos")  # kept in step with recognizers_data.DATASETS
DEFENSE_CHOICES = ("none", "jpeg75", "half")  # kept in step with recognizers_data.DEFENSES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data, people, protection settings, recognizers, defenses, folders."""
    add_data_option(parser)
    parser.add_argument("--datasets", nargs="+", choices=DATASET_CHOICES, default=list(DATASET_CHOICES),
                        help="bundle folders whose person sub-folders take part (photos/group/ is left out)")
    parser.add_argument("--methods", nargs="+", type=protection_run, default=list(METHODS), metavar="LABEL[@EPS]",
                        help=f"protections (labels of PROTECTIONS: {', '.join(METHODS)}); LABEL@8 runs that "
                             "protection at ε 8 only instead of at every --eps")
    parser.add_argument("--eps", nargs="+", type=float, default=[16.0], help="ε values in 0-255 units")
    parser.add_argument("--steps", type=int, help="crafting steps of every method (default: the product's "
                        "default of each method)")
    parser.add_argument("--recognizers", nargs="+", help="recognizers to ask (default: every registered one)")
    parser.add_argument("--defenses", nargs="+", choices=DEFENSE_CHOICES, default=list(DEFENSE_CHOICES),
                        help="what happens to the released photos before enrolment or fitting")
    parser.add_argument("--far", type=float, default=0.01,
                        help="false-accept rate at which a cosine threshold is fitted on other people's clean pairs")
    parser.add_argument("--people", nargs="+", help="only these people (folder names)")
    parser.add_argument("--limit-people", type=int, help="only the first N people (sorted by name; smoke runs)")
    parser.add_argument("--half", choices=HALVES,
                        help="only one half of the people (sorted by name, alternately: tuning = 1st, 3rd, ...; "
                             "held-out = 2nd, 4th, ...): settings are chosen on the tuning half and reported on "
                             "the held-out half, whose photos no choice may see")
    parser.add_argument("--work", type=Path,
                        help="cache folder: protected trees, embeddings (default: runs/recognizers)")
    add_out_option(parser, "folder for NAME.json/.md/.png", default=RESULTS_DIR)
    parser.add_argument("--name", default=NAME, help="results file name")
    add_device_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def protection_run(text: str) -> str:
    """A ``--methods`` item: a protection label, optionally ``@EPS`` (argparse type: checks it)."""
    label, _, eps = text.partition("@")
    if label not in PROTECTIONS:
        raise argparse.ArgumentTypeError(f"unknown protection {label!r}; choose from {', '.join(METHODS)}")
    if eps:
        try:
            float(eps)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: ε after @ must be a number") from None
    return text


def protection_runs(methods: list[str], eps: list[float]) -> list[tuple[str, float]]:
    """(label, ε) pairs of the ``--methods`` items: ``LABEL@E`` at E only, a bare label at every ε."""
    runs = []
    for item in methods:
        label, _, fixed = item.partition("@")
        runs += [(label, float(fixed))] if fixed else [(label, value) for value in eps]
    return list(dict.fromkeys(runs))


def method_settings(label: str, steps: int | None) -> dict:
    """Crafting settings of a protection beyond ε and its method: the product's defaults for the
    method with the changes of :data:`PROTECTIONS` (those of :data:`SHOWN`, and the ensemble of an
    evasion); ``steps`` overrides the steps. A label that names no ``decay_at`` keeps the paper's
    step-size schedule, which every such label was measured with, whatever the product's default;
    one that names no shaping is unshaped (``--strength high``), as every label before session 20."""
    from faceguard.settings import PAPER_DECAYS, protect_settings

    method, changes = PROTECTIONS[label]
    changes = {"decay_at": PAPER_DECAYS, **changes, **({"steps": steps} if steps is not None else {})}
    settings = protect_settings(method, strength="high", **changes)  # unshaped unless the label shapes
    if is_data_free(method):  # drawn, not crafted: no steps to schedule
        shown = ("steps", "seed")
    else:
        shown = SHOWN + (("ensemble",) if method in EVASION_METHODS else ())
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in settings.to_dict().items() if key in shown}


def crafted_with(label: str) -> list[str]:
    """The recognizers a protection's crafting uses: the settings' ensemble for evasion, none for a
    data-free method (synthetic patterns are drawn, not crafted), else the profile (its surrogate)."""
    method, settings = PROTECTIONS[label]
    if method in EVASION_METHODS:
        return list(settings["ensemble"])
    return [] if is_data_free(method) else ["profile"]


def _long_rows(base: dict, threat_model: str, metrics: dict, names: tuple[str, ...]) -> list[dict]:
    """One results row per metric in ``names``; the counts of ``metrics`` ride along."""
    counts = {k: v for k, v in metrics.items() if isinstance(v, int)}
    return [{**base, "threat_model": threat_model, "metric": name, "value": round(metrics[name], 4), **counts}
            for name in names if name in metrics]


@dataclass
class Reference:
    """What every released tree is measured against: the released samples, the clean probes
    (those with a face) as each recognizer embeds them, and each recognizer's per-person thresholds."""

    released: list[Sample]
    probe_vectors: dict[str, list]
    probe_people: list[str]
    thresholds: dict[str, dict[str, float]]


def reference(samples: list[Sample], embeddings: Embeddings, far: float) -> Reference:
    """Embed the clean originals, keep the probes with a face, fit the thresholds on clean photos."""
    import numpy as np

    from benchmarks.recognizers_models import RECOGNIZERS, person_thresholds

    clean = embeddings.embed([s.source for s in samples])
    seen = [k for k, s in enumerate(samples) if clean[embeddings.names[0]][k] is not None]
    probes = [k for k in seen if not samples[k].released]
    thresholds = {name: person_thresholds(RECOGNIZERS[name], np.stack([clean[name][k] for k in seen]),
                                          [samples[k].person for k in seen], far) for name in embeddings.names}
    return Reference([s for s in samples if s.released], {n: [clean[n][k] for k in probes] for n in embeddings.names},
                     [samples[k].person for k in probes], thresholds)


def tree_rows(ref: Reference, embeddings: Embeddings, method: str, eps: float, paths: dict[str, Path], defense: str,
              seconds: float | None) -> list[dict]:
    """Gallery and scraper-fit rows of one tree after one defense (``paths``: released rel → file)."""
    from benchmarks.recognizers_metrics import fit_metrics, gallery_metrics
    from benchmarks.recognizers_models import RECOGNIZERS

    vectors = embeddings.embed([paths[s.rel] for s in ref.released])
    owners = [s.person for s in ref.released]
    rows = []
    for name in embeddings.names:
        base = {"method": method, "eps": int(eps), "victim": name, "recognizer": name, "defense": defense,
                "seeds": [0], **({"seconds_per_photo": seconds} if seconds is not None else {})}
        probes = ref.probe_vectors[name]
        gallery = gallery_metrics(vectors[name], owners, probes, ref.probe_people, RECOGNIZERS[name].metric,
                                  ref.thresholds[name])
        fitted = fit_metrics(vectors[name], owners, probes, ref.probe_people)
        rows += _long_rows(base, "gallery", gallery, ("match_rate", "top1"))
        rows += _long_rows(base, "scraper-fit", fitted, ("logreg_top1", "centroid_top1"))
    return rows


def quality_rows(ref: Reference, embeddings: Embeddings, method: str, eps: float, files: dict[str, Path],
                 entries: dict[str, dict]) -> list[dict]:
    """Quality rows of one protected tree (:func:`benchmarks.recognizers_metrics.summarise_quality`)."""
    from benchmarks.recognizers_metrics import face_quality, summarise_quality

    faces = [face_quality(s.source, files[s.rel], embeddings.box(s.source)) for s in ref.released
             if entries[s.rel].get("status") == "protected"]
    base = {"method": method, "eps": int(eps), "victim": "none", "recognizer": "none", "defense": "none",
            "seeds": [0], "threat_model": "quality"}
    return [{**base, "metric": key, "value": value}
            for key, value in summarise_quality(list(entries.values()), faces).items()]


def run(args: argparse.Namespace) -> int:
    """Protect (resumed), embed (cached), measure, write the results; returns 0."""
    import torch

    from benchmarks import recognizers_data as data
    from benchmarks.recognizers_metrics import summarise_quality
    from benchmarks.recognizers_models import RECOGNIZERS, Embeddings
    from benchmarks.recognizers_report import write_grid, write_report
    from recognition.datasets import default_data_dir

    start = time.perf_counter()
    log = lambda line: print(f"{NAME}: {line}", flush=True)  # noqa: E731
    names = args.recognizers or list(RECOGNIZERS)
    unknown = sorted(set(names) - set(RECOGNIZERS))
    if unknown:
        raise SystemExit(f"unknown recognizers {', '.join(unknown)}; registered: {', '.join(RECOGNIZERS)}")
    work = args.work or Path("runs") / NAME
    people = data.read_people(args.data or default_data_dir(), tuple(args.datasets))
    samples = data.split_samples(people, args.people or (data.half_of(people, args.half) if args.half else None),
                                 args.limit_people)
    people = sorted({s.person for s in samples})
    released = [s for s in samples if s.released]
    log(f"{len(people)} people, {len(released)} released photos, {len(samples) - len(released)} clean probes; "
        f"work folder {work}")
    root = data.sync_released(work, samples)
    trees = {("clean", 0.0): ("clean", {s.rel: root / s.rel for s in released}, {})}
    runs = protection_runs(args.methods, args.eps)
    labels = list(dict.fromkeys(label for label, _ in runs))
    targeted = any(PROTECTIONS[label][0] == "target" for label in labels)
    targets = data.write_targets(work, args.data or default_data_dir()) if targeted else None
    for method, eps in runs:
        tree = data.protect_released(work, root, samples, method, PROTECTIONS[method][0], eps,
                                     method_settings(method, args.steps), args.device, args.quiet, log, targets)
        trees[(method, eps)] = (tree.name, tree.files, tree.entries)
    embeddings = Embeddings(names, args.device, work / "embeddings.json")
    ref = reference(samples, embeddings, args.far)
    log(f"{len(ref.probe_people)} probes with a face")
    rows = []
    for (method, eps), (tree_name, files, entries) in trees.items():
        seconds = summarise_quality(list(entries.values()), []).get("seconds_per_photo") if entries else None
        for defense in args.defenses:
            paths = data.defended_paths(files, work / "defended" / tree_name / defense, defense)
            rows += (found := tree_rows(ref, embeddings, method, eps, paths, defense, seconds))
            log(f"{method} ε={eps:g} defense {defense}: " + ", ".join(
                f"{r['recognizer']} {r['metric']} {r['value']:.2f}" for r in found))
        if entries:
            rows += quality_rows(ref, embeddings, method, eps, files, entries)
    config = {"datasets": args.datasets, "half": args.half, "people": len(people), "released": len(released),
              "probes": len(samples) - len(released), "probes_with_face": len(ref.probe_people),
              "methods": labels, "eps": sorted({e for _, e in runs}), "defenses": args.defenses, "far": args.far,
              "settings": {m: method_settings(m, args.steps) for m in labels},
              "recognizers": {n: {"metric": RECOGNIZERS[n].metric, "threshold": RECOGNIZERS[n].threshold,
                                  "seen_by": [m for m in labels if n in crafted_with(m)],
                                  "held_out": RECOGNIZERS[n].held_out,
                                  "note": RECOGNIZERS[n].note,
                                  "thresholds": {p: round(t, 4) for p, t in ref.thresholds[n].items()}}
                              for n in names},
              "device": str(embeddings.finder.device), "threads": torch.get_num_threads(),
              "seconds": round(time.perf_counter() - start)}
    grid = write_grid(args.out / f"{args.name}.png", released, trees, embeddings)
    path = write_report(args.name, config, args.command_line, rows, args.out, grid)
    log(f"wrote {path}, {path.with_suffix('.md')} and {grid} in {time.perf_counter() - start:.0f} s")
    return 0
