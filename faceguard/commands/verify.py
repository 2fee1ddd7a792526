"""``faceguard verify ORIGINALS PROTECTED --eps 16``: check every pair; non-zero exit on any violation."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("originals", type=Path, help="folder of original photos (or one photo)")
    parser.add_argument("protected", type=Path, help="folder written by faceguard protect (or one photo)")
    parser.add_argument("--eps", type=float, default=16, help="bound in 0-255 pixel levels")
    parser.add_argument("--strict", action="store_true",
                        help="hold JPEG outputs to the bound too (re-encoding usually breaks it)")


def run(args: argparse.Namespace) -> int:
    from faceguard.protect.verify import verify_folders

    checks = verify_folders(args.originals, args.protected, args.eps, args.strict)
    for check in checks:
        if check.problem:
            print(f"verify: {check.rel}: {check.problem}", file=sys.stderr)
    bad = sum(bool(c.problem) for c in checks)
    lossy = sum(c.lossy and not c.problem for c in checks)
    measured = [c.linf for c in checks if c.linf is not None and not c.lossy]
    worst = f"; largest lossless L-inf {max(measured)}" if measured else ""
    print(f"verify: {len(checks)} pairs: {len(checks) - bad} ok, {bad} violations"
          + (f", {lossy} JPEG outputs not held to the bound (--strict)" if lossy and not args.strict else "")
          + worst)
    return 1 if bad or not checks else 0
