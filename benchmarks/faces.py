"""``python -m benchmarks faces --config faces-cpu|celeba-paper``: what protection does to face
recognition (the paper's Tables 7 and 10), end to end.

Split identities → train a CosFace surrogate on the pre-training identities → target gradient →
craft protected copies of the pre-training set (alignment, joint and independent, at every ε;
random ±ε noise as the baseline; the config's other ``methods``) → train a fresh victim on each
(and on the clean set; again under each of the config's data ``defenses``) →
leave-one-out kNN identification on the test identities (on Yale B also across lighting: the
frontally lit images as the gallery) + verification on every available ``.bin`` →
``benchmarks/results/{name}.{json,md,png}``. Each seed also reports ``pixels``, ``untrained`` and
``untrained-bn`` rows: raw pixels, the untrained victim, and the untrained victim with BatchNorm
statistics of the clean training faces: the floor a poison can push toward. Rows are written after
every seed, so an interrupted run keeps what it measured. ``--surrogate ir50`` gives Table 10 (a larger surrogate
crafting for the IR-18 victim). ``benchmarks/results/{name}.findings.md``, when present, is appended
to the Markdown report (the hand-written account of what was tried).
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from benchmarks.faces_configs import CONFIGS, DROP_METRICS, FacesConfig, resolve_config, set_overrides
from benchmarks.results import (RESULTS_DIR, format_cell, markdown_table, plot_metric_vs_eps, summarize, write_markdown,
                               write_results)
from recognition.cli import add_data_option, add_device_option, add_out_option, add_set_option



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Config choice, data locations, and overrides of the config's main fields."""
    parser.add_argument("--config", choices=sorted(CONFIGS), default="faces-cpu")
    add_data_option(parser)
    parser.add_argument("--celeba", type=Path, help="CelebA root (identity_CelebA.txt, img_align_celeba/)")
    parser.add_argument("--bin-dir", type=Path, help="folder of insightface .bin sets (lfw.bin, cfp_fp.bin, ...)")
    parser.add_argument("--surrogate", help="surrogate backbone, e.g. ir50 for Table 10 (default: the config's)")
    parser.add_argument("--surrogate-width", type=float, help="surrogate width multiplier")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds running every row")
    parser.add_argument("--extra-seeds", type=int, nargs="*", help="seeds running only the headline rows")
    parser.add_argument("--eps", type=int, nargs="+", help="alignment ε values (0-255 units)")
    parser.add_argument("--random-eps", type=int, nargs="*", help="random-noise ε values (0-255 units)")
    parser.add_argument("--variants", nargs="+", choices=("joint", "independent"))
    parser.add_argument("--steps", type=int, help="crafting steps")
    parser.add_argument("--restarts", type=int, help="crafting restarts")
    parser.add_argument("--surrogate-epochs", type=int)
    parser.add_argument("--victim-epochs", type=int)
    parser.add_argument("--orl-pairs", type=int, help="ORL genuine (= impostor) pairs for orl.bin, 0 = none")
    parser.add_argument("--identities", type=int, help="use only this many identities (smoke runs)")
    add_set_option(parser, "override any other config field")
    add_device_option(parser)
    parser.add_argument("--name", help="results name (default: the config, -sur-MODEL with --surrogate)")
    add_out_option(parser, "folder for NAME.json/.md/.png", default=RESULTS_DIR)


def _config(args: argparse.Namespace) -> FacesConfig:
    """The chosen config with the command-line overrides applied."""
    tuples = {key: tuple(value) if value is not None else None for key, value in
              (("seeds", args.seeds), ("extra_seeds", args.extra_seeds), ("eps", args.eps),
               ("random_eps", args.random_eps), ("variants", args.variants))}
    flags = dict(surrogate=args.surrogate, surrogate_width=args.surrogate_width, steps=args.steps,
                 restarts=args.restarts, surrogate_epochs=args.surrogate_epochs, victim_epochs=args.victim_epochs,
                 orl_pairs=args.orl_pairs, **tuples)
    # explicit flags win over --set; resolve_config ignores the None (not given) ones
    return resolve_config(args.config, **{**set_overrides(args.config, args.set),
                                          **{key: value for key, value in flags.items() if value is not None}})


def run(args: argparse.Namespace) -> int:
    """Run every seed, writing the results after each; returns 0."""
    import torch

    from benchmarks.faces_pipeline import load_face_data, reported_metrics, restrict_identities, run_seed
    from recognition.datasets import default_data_dir
    from recognition.device import resolve_device

    config = _config(args)
    name = args.name or (config.name if args.surrogate is None else f"{config.name}-sur-{config.surrogate}")
    device = resolve_device(args.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="faces-") as work:
        data = load_face_data(config, args.data or default_data_dir(), args.celeba, args.bin_dir, Path(work))
    if args.identities:
        data = restrict_identities(data, args.identities)
    print(f"{name}: {len(data.pretrain)} pre-training images of {len(data.pretrain.classes)} identities, "
          f"{len(data.test)} test images of {len(data.test.classes)}, verification: {sorted(data.verification)}",
          flush=True)
    metrics = reported_metrics(data)
    runs: list[dict] = []
    for seed in (*config.seeds, *config.extra_seeds):
        torch.manual_seed(seed)
        runs += run_seed(config, data, seed, device, headline_only=seed not in config.seeds,
                         log=lambda line: print(line, flush=True))
        _write(name, config, args, data.checksums, summarize(runs, metrics), metrics,
               round(time.perf_counter() - start), str(device))
    print(f"wrote {args.out / name}.{{json,md,png}} in {time.perf_counter() - start:.0f} s")
    return 0


def _write(name: str, config: FacesConfig, args: argparse.Namespace, checksums: dict, rows: list[dict],
           metrics: list[str], seconds: int, device: str) -> None:
    """Results JSON (config, checksums, timing, rows), Markdown table and top-1 plot."""
    rows = sorted(rows, key=lambda r: (r["method"] != "clean", r["method"], r["eps"], r["defense"] != "none",
                                       r["defense"]))
    record = {**dataclasses.asdict(config), "data_sha256": checksums, "seconds": seconds, "device": device,
              "identities_limit": args.identities}
    out_dir = args.out
    path = write_results(name, record, args.command_line, rows, out_dir)
    plot_metric_vs_eps(rows, "top1", out_dir / f"{name}.png", f"{name}: kNN top-1 on test identities")
    write_markdown(path.with_suffix(".md"), _markdown(name, record, args.command_line, rows, metrics))


def _markdown(name: str, config: dict, command: str, rows: list[dict], metrics: list[str]) -> str:
    """Table-7-style report: one line per row, relative top-1 drops against the clean victim."""
    drops = [m for m in DROP_METRICS if m in metrics]
    clean = {(run["seed"], m): run[m] for row in rows if (row["method"], row["defense"]) == ("clean", "none")
             for run in row["runs"] for m in drops}
    defended = any(row["defense"] != "none" for row in rows)
    header = ["method", "ε", *(["defense"] if defended else []), "victim", "seeds", *metrics,
              *(f"{m.replace('_', ' ')} drop" for m in drops), "crafting loss", "clean-train acc"]
    lines = []
    for row in rows:
        cells = []
        for metric in drops:
            cells.append("–")
            if row["method"] != "clean" and all((seed, metric) in clean for seed in row["seeds"]):
                reference = sum(clean[seed, metric] for seed in row["seeds"]) / len(row["seeds"])
                cells[-1] = f"{100 * (1 - row[metric] / reference):.1f} %"
        loss = "alignment_loss" if "alignment_loss" in row else "craft_loss"
        lines.append([row["method"], row["eps"], *([row["defense"]] if defended else []), row["victim"],
                      ",".join(map(str, row["seeds"])), *(format_cell(row, m) for m in metrics), *cells,
                      format_cell(row, loss), format_cell(row, "clean_train_acc")])
    summary = (f"surrogate {config['surrogate']} ×{config['surrogate_width']}, victim {config['victim']} "
               f"×{config['victim_width']}, {config['data']} {config['size']}² ({config['channels']} ch), CosFace "
               f"s={config['head_s']} m={config['head_m']}, {config['surrogate_epochs']}/{config['victim_epochs']} "
               f"epochs, {config['steps']} steps × {config['restarts']} restart(s), crafting augmentation "
               f"{config['craft_augment']}, backend {config['backend']}; {config['seconds']} s on {config['device']}")
    return (f"# Face benchmark: {name}\n\n`{command}`\n\n{summary}\n\n"
            "top1/top5: leave-one-out kNN identification (%) on the test identities; cross_light_top1: "
            "nearest-neighbour identification (%) of the test identities' images lit more than 12.5° off the "
            "camera axis against their frontally lit ones (Yale B subset 1), where neighbouring lighting cannot "
            "help; pixels / untrained / untrained-bn: raw pixels, the untrained victim, and the untrained victim "
            "with BatchNorm statistics of the clean training faces as embeddings (the floor); "
            "verification sets: "
            "10-fold accuracy (%); top1 drop: relative to the clean victims of the same seeds (trained "
            "without a defense: what the defense wins back for whoever trains on the protected set); crafting "
            "loss: alignment's A, else the method's kept objective; "
            "clean-train acc: the victim's accuracy on the clean pre-training images.\n\n"
            + markdown_table(header, lines))
