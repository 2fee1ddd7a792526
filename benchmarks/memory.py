"""``python -m benchmarks memory``: peak memory of ``faceguard poison`` (or ``protect``) against corpus size.

``--command poison`` (the default): for each size N, the first N real CIFAR-10 training JPEGs are
written as an ImageFolder, and ``faceguard poison`` protects them in a fresh process (one chunk, target gradient over every image,
short crafting) with a small fixed surrogate. The child's peak resident set size
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``, read in a fresh wrapper process per size) shows
whether memory grows with the corpus: the design streams the target gradient, crafts batch by
batch and writes every batch as it finishes, so it should not. Writes
``benchmarks/results/memory.{json,md}``.

``--command protect``: for each size N, N copies of the bundle's colour photos (cycled, as
``protect-speed`` builds them) are protected by ``faceguard protect`` with its defaults but
``--steps`` (visibility numbers included), in one process of ``--threads`` threads. It handles a
photo at a time, so its peak should not grow with N either. Writes
``benchmarks/results/memory-protect.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.results import RESULTS_DIR, markdown_table, write_markdown, write_results
from faceguard.registry import DEFAULT_BACKEND
from recognition.cli import add_data_option, add_out_option
from recognition.files import file_sha256

_CHILD = """
import resource, subprocess, sys, json
start = __import__("time").perf_counter()
code = subprocess.call(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "peak_rss_mb": peak / 1024, "seconds": __import__("time").perf_counter() - start}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--command", choices=("poison", "protect"), default="poison", help="what is measured")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N",
                        help="corpus sizes (default: 1000 10000 images to poison, 16 64 256 photos to protect)")
    parser.add_argument("--steps", type=int, default=1, help="crafting steps per batch (memory does not depend on it)")
    add_data_option(parser)
    add_out_option(parser, "folder for memory.json/.md", default=RESULTS_DIR)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of the measured process")


def write_image_folder(archive: Path, root: Path, count: int) -> None:
    """The first ``count`` training JPEGs of the archive (sorted member order), as root/<class>/<file>."""
    written = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if written >= count:
                break
            if member.isfile() and len(parts) == 3 and parts[0] == "train":
                target = root / parts[1] / parts[2]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                written += 1
    if written < count:
        raise ValueError(f"{archive} holds only {written} training images")


def _peak_of(command: list[str], threads: int, what: str) -> dict:
    """Run ``command`` (``what`` it does, for the error) in a fresh wrapper process with ``threads``
    OMP threads: its peak resident set size (MB) and seconds."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _CHILD, *command], env=env, capture_output=True, text=True,
                            check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["code"] != 0:
        raise RuntimeError(f"{what} failed: {result.stderr[-500:]}")
    return {"peak_rss_mb": round(measured["peak_rss_mb"], 1), "seconds": round(time.perf_counter() - start, 1)}


def _poison_rows(args: argparse.Namespace, tmp: Path, sizes: list[int]) -> tuple[list[dict], dict]:
    import torch

    from recognition.checkpoint import save_checkpoint
    from recognition.datasets import default_data_dir
    from recognition.models import create_model

    archive = (args.data or default_data_dir()) / "cifar10_jpeg.tar.gz"
    torch.manual_seed(0)
    surrogate = tmp / "surrogate.safetensors"
    save_checkpoint(create_model("resnet18", num_classes=10, width=0.125), surrogate,
                    {"model": "resnet18", "num_classes": 10, "width": 0.125})
    rows = []
    for size in sizes:
        data = tmp / f"data-{size}"
        write_image_folder(archive, data, size)
        command = [sys.executable, "-m", "faceguard.cli", "poison", str(data), "--eps", "8", "--out",
                   str(tmp / f"out-{size}"), "--surrogate", str(surrogate), "--steps", str(args.steps),
                   "--restarts", "1", "--target", "all", "--chunk-size", str(max(sizes)), "--method", "alignment",
                   "--backend", DEFAULT_BACKEND, "--quiet"]
        rows.append({"images": size, **_peak_of(command, args.threads, f"faceguard poison on {size} images")})
        print(json.dumps(rows[-1]), flush=True)
    config = {"data": archive.name, "data_sha256": file_sha256(archive), "surrogate": "resnet18 width 0.125",
              "steps": args.steps, "backend": DEFAULT_BACKEND}
    return rows, config


def _protect_rows(args: argparse.Namespace, tmp: Path, sizes: list[int]) -> tuple[list[dict], dict]:
    from benchmarks.protect_speed import cycled_bundle
    from recognition.datasets import default_data_dir

    bundle = (args.data or default_data_dir()) / "photos"
    rows = []
    for size in sizes:
        photos = tmp / f"photos-{size}"
        cycled_bundle(bundle, photos, size)
        command = [sys.executable, "-m", "faceguard.cli", "protect", str(photos), "--out", str(tmp / f"out-{size}"),
                   "--steps", str(args.steps), "--quiet"]
        rows.append({"images": size, **_peak_of(command, args.threads, f"faceguard protect on {size} photos")})
        print(json.dumps(rows[-1]), flush=True)
    return rows, {"data": "photos/ (the bundle's colour photos, cycled)", "steps": args.steps,
                  "settings": "faceguard protect defaults but --steps"}


def run(args: argparse.Namespace) -> int:
    poison = args.command == "poison"
    sizes = args.sizes or ([1000, 10000] if poison else [16, 64, 256])
    with tempfile.TemporaryDirectory() as tmp:
        rows, config = (_poison_rows if poison else _protect_rows)(args, Path(tmp), sizes)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    config |= {"command": args.command, "threads": args.threads, "peak_ratio_largest_to_smallest": round(ratio, 3)}
    name, unit = ("memory", "images") if poison else ("memory-protect", "photos")
    out = Path(args.out)
    write_results(name, config, args.command_line, rows, out)
    table = markdown_table([unit, "peak RSS (MB)", "seconds"],
                           [[r["images"], r["peak_rss_mb"], r["seconds"]] for r in rows])
    settings = f"backend `{DEFAULT_BACKEND}`" if poison else f"defaults but `--steps {args.steps}`"
    write_markdown(out / f"{name}.md", f"# Peak memory of faceguard {args.command} vs corpus size\n\nCommand: "
                   f"`{args.command_line}` ({settings}, {args.threads} thread(s))\n\n{table}\n"
                   f"Largest / smallest: {ratio:.3f}×\n")
    print(f"peak RSS ratio {ratio:.3f}; wrote {out / (name + '.json')}, {out / (name + '.md')}")
    return 0
