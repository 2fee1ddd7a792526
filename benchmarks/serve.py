"""``python -m benchmarks serve``: throughput and latency of ``faceguard serve`` against ``faceguard protect``.

Builds a folder of ``--photos`` photos (the bundle's colour photos, cycled, under distinct names), then:

1. ``faceguard protect`` on that folder in this process (``protect_folder``, one process with the
   machine's threads, as the CLI runs; models loaded before the clock starts): seconds per photo;
2. for each ``--workers`` W: a real ``faceguard serve --workers W`` process (timed from when
   ``/api/health`` answers, i.e. after its workers loaded their models), and for each ``--clients`` C,
   C client threads posting the same photos to ``POST /api/protect`` until all are done: photos per
   second and per-request latency p50 / p95;
3. ``faceguard protect`` again, so the API overhead (one worker, one client: seconds per photo
   over protect's, minus 1) is taken against the mean of a run before and a run after: on a shared
   machine the load moves during a run.

Writes ``benchmarks/results/serve.{json,md}`` (``serve-sSTEPS`` with ``--steps``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from faceguard.serve.options import SERVE_METHODS
from recognition.cli import add_data_option, add_out_option

START_SECONDS = 600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos", type=int, default=8, help="photos per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server worker processes to measure")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4], help="concurrent clients to measure")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times protect and serve (one worker, one client) are measured in turn, for the overhead")
    parser.add_argument("--eps", type=float, default=16)
    parser.add_argument("--method", choices=SERVE_METHODS, default="evade")
    parser.add_argument("--steps", type=int, help="crafting steps (default: the method's); the results file "
                        "name then ends in -sSTEPS")
    parser.add_argument("--work", type=Path, default=Path("runs/serve-bench"),
                        help="scratch folder (emptied first, removed after)")
    add_data_option(parser)
    add_out_option(parser, "folder for the results files (default: benchmarks/results)")


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(values, q)), 3)


def _protect_folder(work: Path, protector: object, args: argparse.Namespace) -> float:
    """Seconds per photo of ``faceguard protect`` on ``work/photos`` into a fresh ``work/out``."""
    from faceguard.protect.folder import FolderOptions, protect_folder

    shutil.rmtree(work / "out", ignore_errors=True)
    start = time.perf_counter()
    summary = protect_folder(work / "photos", protector, FolderOptions(out=work / "out", progress=False))
    seconds = time.perf_counter() - start
    if summary.exit_code:
        raise RuntimeError(f"faceguard protect failed on some photos: {summary.line()}")
    return round(seconds / args.photos, 3)


def _row(mode: str, workers: int, clients: int, args: argparse.Namespace) -> dict:
    """A results row's keys (the shared results format's, and what was measured)."""
    method = "protect" if mode == "protect" else f"serve-w{workers}-c{clients}"
    return {"method": method, "eps": int(args.eps), "victim": "none", "defense": "none", "seeds": [0],
            "mode": mode, "workers": workers, "clients": clients}


def _start_server(workers: int, threads: int, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    """A ``faceguard serve`` process on a free port whose workers share ``threads`` torch threads,
    once it answers (its models loaded)."""
    import requests

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "faceguard.cli", "serve", "--port", str(port), "--workers", str(workers),
               "--device", "cpu", "--threads", str(max(1, threads // workers))]
    command += [] if args.steps is None else ["--steps", str(args.steps)]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + START_SECONDS
    while True:
        try:
            if requests.get(f"{url}/api/health", timeout=2).json() == {"status": "ok"}:
                return process, url
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"faceguard serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def _load(url: str, photos: list[Path], clients: int, args: argparse.Namespace) -> dict:
    """``clients`` threads post every photo once between them; throughput and latencies."""
    import requests

    from faceguard.serve.app import RECORD_HEADER

    todo, latencies, worker, failures, lock = list(photos), [], [], [], threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if not todo:
                        return
                    path = todo.pop()
                start = time.perf_counter()
                response = session.post(f"{url}/api/protect", files={"photo": (path.name, path.read_bytes())},
                                        data={"eps": str(args.eps), "method": args.method}, timeout=3600)
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if response.status_code != 200:
                        failures.append(f"{path.name}: {response.status_code} {response.text[:200]}")
                    else:
                        worker.append(json.loads(response.headers[RECORD_HEADER])["seconds"])

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"requests failed: {failures[:3]}")
    return {"photos": len(photos), "seconds_total": round(wall, 2), "photos_per_second": round(len(photos) / wall, 4),
            "seconds_per_photo": round(wall / len(photos), 3), "latency_p50": _percentile(latencies, 50),
            "latency_p95": _percentile(latencies, 95), "latency_mean": round(sum(latencies) / len(latencies), 3),
            "worker_seconds_mean": round(sum(worker) / len(worker), 3),
            "http_seconds_mean": round((sum(latencies) - sum(worker)) / len(worker), 3)}


def markdown_report(result: dict) -> str:
    """Throughput and latency per (workers, clients, round), and the API overhead."""
    from benchmarks.results import markdown_table

    config, rows = result["config"], result["rows"]
    overhead = config["overhead"]
    lines = [[str(row["workers"]), str(row["clients"]), str(row["round"] + 1), f"{row['photos_per_second']:.3f}",
              f"{row['seconds_per_photo']:.2f}", f"{row['latency_p50']:.2f}", f"{row['latency_p95']:.2f}",
              f"{row['worker_seconds_mean']:.2f}", f"{row['http_seconds_mean']:.3f}"]
             for row in rows if row["mode"] == "serve"]
    table = markdown_table(["workers", "clients", "round", "photos / s", "s / photo", "latency p50 (s)",
                            "latency p95 (s)", "in the worker (s)", "outside it (s)"], lines)
    base = ", ".join(f"{row['seconds_per_photo']:.2f}" for row in rows if row["mode"] == "protect")
    env = f"OMP_NUM_THREADS={config['omp_num_threads']} " if config.get("omp_num_threads") else ""
    return (f"# faceguard serve: throughput and latency\n\n`{env}{result['command']}`\n\n"
            f"{config['photos']} photos per row, --method {config['method']} at ε = {config['eps']:g}, "
            f"{config['steps']} steps, CPU only, {config['cores']} cores; {config['threads']} torch thread(s) for "
            "`faceguard protect` and shared among a server's workers (at least one each). Each row is one `faceguard serve --workers W` process and C clients "
            "posting the photos to `POST /api/protect` until all are done; latency is per request, queueing "
            "included; *in the worker* is the mean time `protect_file` took (the record's `seconds`), *outside "
            "it* the mean of latency minus that (upload, checks, queue, answer).\n\n"
            f"{table}\n\n**API overhead, one worker, one client**: {overhead['serve_seconds_per_photo']:.2f} s per "
            f"photo served against {overhead['protect_seconds_per_photo']:.2f} s with `faceguard protect` on the same "
            f"photos, measured in turn over {overhead['rounds']} rounds (protect: {base} s): "
            f"**{100 * overhead['ratio_minus_one']:+.1f} %** (target ≤ 10 %); of each request "
            f"{overhead['http_seconds_per_photo']:.3f} s was spent outside the worker.\n")


def _photos(args: argparse.Namespace, src: Path) -> list[Path]:
    """``--photos`` copies of the bundle's one-person photos, cycled, under distinct names in ``src``."""
    from recognition.datasets import default_data_dir
    from recognition.files import find_photos

    bundle = (args.data or default_data_dir()) / "photos"
    sources = [rel for rel in find_photos(bundle)[0] if rel.parts[0] != "group"]
    photos = []
    for k in range(args.photos):
        rel = sources[k % len(sources)]
        photos.append(src / f"{rel.parent.name}_{rel.stem}_{k:03d}{rel.suffix}")
        photos[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / rel, photos[-1])
    return photos


def _measure(args: argparse.Namespace, work: Path, threads: int) -> list[dict]:
    """Every row: with one worker, ``--rounds`` times protect then serve (one client) in turn, then
    the other client counts; then each other worker count with every client count."""
    from faceguard.protect.protector import Protector

    photos = _photos(args, work / "photos")
    changes = {} if args.steps is None else {"steps": args.steps}
    protector = Protector(eps=args.eps, method=args.method, device="cpu", **changes)
    rows = []
    for workers in args.workers:
        process, url = _start_server(workers, threads, args, work / f"serve-{workers}.log")
        try:
            for clients in args.clients:
                rounds = args.rounds if (workers, clients) == (1, 1) else 1
                for round_ in range(rounds):
                    if (workers, clients) == (1, 1):
                        rows.append(_row("protect", 1, 0, args) | {"round": round_, "seconds_per_photo":
                                                                     _protect_folder(work, protector, args)})
                    rows.append(_row("serve", workers, clients, args) | {"round": round_}
                                | _load(url, photos, clients, args))
                    print(rows[-1], flush=True)
        finally:
            process.terminate()
            process.wait(timeout=120)
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.results import RESULTS_DIR, write_markdown, write_results
    from faceguard.settings import protect_settings

    if 1 not in args.workers or 1 not in args.clients:
        raise ValueError("the overhead is measured with one worker and one client: keep 1 in --workers and --clients")
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    try:
        rows = _measure(args, work, torch.get_num_threads())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pairs = [row for row in rows if row["mode"] == "protect" or (row["workers"], row["clients"]) == (1, 1)]
    protect = [row["seconds_per_photo"] for row in pairs if row["mode"] == "protect"]
    served = [row["seconds_per_photo"] for row in pairs if row["mode"] == "serve"]
    http = [row["http_seconds_mean"] for row in pairs if row["mode"] == "serve"]
    overhead = {"rounds": args.rounds, "protect_seconds_per_photo": round(sum(protect) / len(protect), 3),
                "serve_seconds_per_photo": round(sum(served) / len(served), 3),
                "ratio_minus_one": round(sum(served) / sum(protect) - 1, 4),
                "http_seconds_per_photo": round(sum(http) / len(http), 3)}
    steps = args.steps if args.steps is not None else protect_settings(args.method).steps
    config = {"photos": args.photos, "eps": args.eps, "method": args.method, "steps": steps,
              "cores": os.cpu_count(), "threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "overhead": overhead}
    name = "serve" + (f"-s{args.steps}" if args.steps is not None else "")
    out = args.out or Path(RESULTS_DIR)
    write_results(name, config, args.command_line, rows, out)
    text = markdown_report({"config": config, "command": args.command_line, "rows": rows})
    write_markdown(out / f"{name}.md", text)
    print(text)
    return 0
