"""``python -m benchmarks protect-speed``: seconds per photo of ``faceguard protect`` and where they go.

Builds a folder of ``--photos`` photos (the bundle's 16 colour photos, cycled, under distinct names,
in their identity folders), protects it at ε = 16 with the default profile and the default settings
of ``--method`` (and ``--ensemble`` for evade) exactly as the CLI does (``protect_folder``), and
splits the wall time into detection (MTCNN on the full photo), crafting (PGD through the photo warp,
incl. its loss evaluations), the re-detection and loss of the saved photo, its visibility numbers
(FLIP and CIEDE2000 of each face and of the photo, and of the original's JPEG re-saves; what
protect's ``--no-visibility`` leaves out), and the rest (decoding, encoding, hashing, SSIM, manifest
writes), and records the peak resident memory of the largest process. Writes
``benchmarks/results/protect-speed.{json,md}`` for alignment,
``protect-speed-<method>-<strength>.{json,md}`` for an evasion method (``--strength``: protect's
shaping) and ``protect-speed-<method>.{json,md}`` otherwise.

Under ``torchrun --nproc_per_node=W -m benchmarks protect-speed`` the folder is protected by W
processes as ``faceguard protect`` does under torchrun; seconds per photo are then wall seconds
(the throughput), and the stages are process-seconds summed over the processes.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import time
from collections import defaultdict
from pathlib import Path

from faceguard.registry import ENSEMBLE, EVASION_METHODS
from faceguard.settings import DEFAULT_STRENGTH, PROTECT_METHODS, STRENGTHS
from recognition.cli import add_data_option, add_device_option, add_out_option

STAGES = ("detect", "craft", "measure_saved", "visibility")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos", type=int, default=100, help="number of photos")
    parser.add_argument("--eps", type=float, default=16)
    parser.add_argument("--format", choices=("keep", "png"), default="keep")
    parser.add_argument("--method", choices=PROTECT_METHODS, default="alignment", help="protect's --method")
    parser.add_argument("--ensemble", nargs="+", choices=ENSEMBLE.names(),
                        help="protect's --ensemble (evade; default: the product's)")
    parser.add_argument("--strength", choices=list(STRENGTHS), default=DEFAULT_STRENGTH,
                        help="protect's --strength (evasion methods; default: %(default)s); the results file "
                        "name then has -STRENGTH after the method")
    parser.add_argument("--steps", type=int, help="protect's --steps (default: the method's); the results "
                        "file name then ends in -sSTEPS")
    parser.add_argument("--work", type=Path, default=Path("runs/protect-speed"),
                        help="scratch folder for the photos and their protected copies (emptied first, removed after)")
    add_device_option(parser, default="cpu")
    add_data_option(parser)
    add_out_option(parser, "folder for the results files (default: benchmarks/results)")


def cycled_bundle(bundle: Path, folder: Path, count: int) -> None:
    """``count`` copies of the bundle's photos, cycled, in ``folder``: each in its identity folder
    under a distinct name (``obama/obama_017.jpg``)."""
    from recognition.files import find_photos

    sources = find_photos(bundle)[0]
    for k in range(count):
        rel = sources[k % len(sources)]
        target = folder / rel.parent / f"{rel.stem}_{k:03d}{rel.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / rel, target)


def _timed(stats: dict, name: str, function):
    """``function`` wrapped so its wall time accumulates in ``stats[name]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            stats[name] += time.perf_counter() - start
    return wrapper


def markdown_report(result: dict) -> str:
    """The report of one results file: per stage, seconds per photo and its share of the time spent
    (with several processes: process-seconds, whose total is the wall time times the processes)."""
    from benchmarks.results import markdown_table

    config, row = result["config"], result["rows"][0]
    processes = config.get("processes", 1)
    spent = row["seconds_per_photo"] * processes
    stages = [(stage, row[f"seconds_{stage}_per_photo"]) for stage in (*STAGES, "other")
              if f"seconds_{stage}_per_photo" in row]  # files written before a stage was timed lack it
    lines = [[stage, f"{seconds:.3f}", f"{100 * seconds / spent:.0f} %"] for stage, seconds in stages]
    lines.append(["total (wall)", f"{row['seconds_per_photo']:.3f}", "100 %" if processes == 1 else "–"])
    table = markdown_table(["stage", "s / photo", "share"], lines)
    strength = f" --strength {config['strength']}" if config.get("strength") else ""
    settings = f"--method {config['method']}{strength} defaults, {config['steps']} steps"
    settings += f", ensemble {' + '.join(config['ensemble'])}" if config.get("ensemble") else ""
    memory = f"; peak resident memory {row['peak_rss_mb']:.0f} MB (the largest process)" if "peak_rss_mb" in row else ""
    workers = f"{processes} processes (torchrun; stages in process-seconds) of " if processes > 1 else ""
    return (f"# faceguard protect speed\n\n`{result['command']}`\n\n{row['photos']} photos ({row['faces']} faces), "
            f"ε = {config['eps']:g}, {settings}, {workers}{config['threads']} thread(s), device {config['device']}: "
            f"{row['seconds_total']:.1f} s in all{memory}.\n\n{table}")


def run(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.results import RESULTS_DIR, write_markdown, write_results
    from faceguard.protect import folder
    from faceguard.protect.folder import FolderOptions, protect_folder
    from faceguard.protect.protector import Protector
    from recognition.datasets import default_data_dir
    from recognition.distributed import all_reduce_max, all_reduce_sum, barrier, close_distributed, init_distributed

    bundle = (args.data or default_data_dir()) / "photos"
    stats: dict[str, float] = defaultdict(float)
    changes = {"ensemble": args.ensemble} if args.ensemble else {}
    if args.steps is not None:
        changes["steps"] = args.steps
    context = init_distributed(args.device)
    evasion = args.method in EVASION_METHODS
    if evasion:
        changes["strength"] = args.strength
    protector = Protector(eps=args.eps, device=context.device, method=args.method, **changes)
    protector.detect = _timed(stats, "detect", protector.detect)
    protector.protect_pixels = _timed(stats, "craft", protector.protect_pixels)
    protector.measure_saved = _timed(stats, "measure_saved", protector.measure_saved)
    measure_visibility = folder.visibility_entry
    folder.visibility_entry = _timed(stats, "visibility", measure_visibility)
    work = args.work
    try:
        src = work / "photos"
        if context.is_main:  # a fresh copy, filled by rank 0 while the others wait
            shutil.rmtree(work, ignore_errors=True)
            cycled_bundle(bundle, src, args.photos)
        barrier(context)
        start = time.perf_counter()
        summary = protect_folder(src, protector, FolderOptions(out=work / "out", format=args.format, progress=False),
                                 context)
        total = time.perf_counter() - start
        summed = all_reduce_sum(torch.tensor([stats[s] for s in STAGES], dtype=torch.float64), context).tolist()
        stats.update(zip(STAGES, summed))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        peak_rss_mb = all_reduce_max(torch.tensor([peak], dtype=torch.float64), context).item()
    finally:
        folder.visibility_entry = measure_visibility
        barrier(context)
        close_distributed()
        if context.is_main:
            shutil.rmtree(work, ignore_errors=True)
    if not context.is_main:
        return 0
    n = args.photos
    rest = total * context.world_size - sum(stats[s] for s in STAGES)
    name = ("protect-speed" if args.method == "alignment" else f"protect-speed-{args.method}") + \
        (f"-{args.strength}" if evasion else "") + (f"-s{args.steps}" if args.steps is not None else "")
    label = f"protect-{'png' if args.format == 'png' else 'keep'}"
    row = {"method": label if args.method == "alignment" else f"{label}-{args.method}", "eps": int(args.eps),
           "victim": "none", "defense": "none", "seeds": [0], "photos": n, "faces": summary.faces,
           "errors": summary.counts["error"], "seconds_total": round(total, 2),
           "seconds_per_photo": round(total / n, 3),
           **{f"seconds_{s}_per_photo": round(stats[s] / n, 3) for s in STAGES},
           "seconds_other_per_photo": round(rest / n, 3), "peak_rss_mb": round(peak_rss_mb, 1)}
    config = {"photos": n, "eps": args.eps, "method": args.method, "strength": args.strength if evasion else None,
              "steps": protector.settings.steps,
              "restarts": protector.settings.restarts, "format": args.format,
              "ensemble": list(protector.settings.ensemble) if evasion else None,
              "device": args.device, "threads": torch.get_num_threads(), "processes": context.world_size,
              "profile": protector.profile.config["provenance"]["command"]}
    out = args.out or Path(RESULTS_DIR)
    write_results(name, config, args.command_line, [row], out)
    text = markdown_report({"config": config, "command": args.command_line, "rows": [row]})
    write_markdown(out / f"{name}.md", text)  # with NAME.findings.md appended when there is one
    print(text)
    return 0 if summary.exit_code == 0 else 1
