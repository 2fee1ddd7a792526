"""``faceguard serve [--host 127.0.0.1] [--port 8000]``: the local web page and the HTTP API
(docs/serve.md). Binds to loopback by default; any other host is reachable by everyone on that
network, which the command says before it starts."""
from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from faceguard.serve.uploads import MEBIBYTE, Limits
from recognition.cli import add_device_option

DEFAULTS = Limits()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (loopback: only this computer can use the page)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, each loading the models once and protecting one photo at a time")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: the cores shared among "
                                                    "the workers, or $OMP_NUM_THREADS)")
    parser.add_argument("--profile", type=Path,
                        help="profile from `faceguard fit` (default: the profile shipped in the package)")
    parser.add_argument("--steps", type=int, help="crafting steps for every method (default: each method's, as "
                                                  "faceguard protect); fewer is faster and protects less")
    parser.add_argument("--max-mb", type=float, default=DEFAULTS.max_bytes / MEBIBYTE,
                        help="largest photo accepted, in MiB")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULTS.max_megapixels,
                        help="largest photo accepted, in megapixels (checked before decoding)")
    parser.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                        help="photos waiting at most; more are refused with 503 until the queue shortens")
    parser.add_argument("--job-ttl", type=float, default=DEFAULTS.job_ttl,
                        help="seconds an unused job (and its temporary files) is kept")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser once ready")
    add_device_option(parser)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this computer (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from faceguard.serve.app import ServeConfig, create_app

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if not is_loopback(args.host):
        print(f"serve: warning: listening on {args.host}: anyone who can reach this address on the network can "
              "upload photos and use this computer's processors; there is no login", file=sys.stderr)
    limits = Limits(max_bytes=int(args.max_mb * MEBIBYTE), max_megapixels=args.max_megapixels,
                    max_queue=args.max_queue, job_ttl=args.job_ttl)
    config = ServeConfig(workers=args.workers, threads=args.threads, device=args.device,
                         profile=None if args.profile is None else str(args.profile),
                         changes={} if args.steps is None else {"steps": args.steps}, limits=limits,
                         command=args.command_line)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    config.open_url = f"http://{shown}:{args.port}/" if args.open else None
    print(f"serve: loading the models in {args.workers} worker(s); then open http://{shown}:{args.port}/",
          file=sys.stderr, flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")
    return 0
