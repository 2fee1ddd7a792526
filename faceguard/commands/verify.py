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
    parser.add_argument("--no-visibility", dest="visibility", action="store_false",
                        help="leave out FLIP and CIEDE2000 of each face against JPEG-90/75 re-saves of the original")


def visibility_line(record: dict) -> str:
    """One face's visibility in words: FLIP, its ratio to the JPEG re-saves, ΔE00."""
    from faceguard.visibility import as_visible_as

    return (f"FLIP {record['flip']:.3f} ({as_visible_as(record['ratio_jpeg75'], 75)}, "
            f"{as_visible_as(record['ratio_jpeg90'], 90)}), CIEDE2000 {record['ciede2000']:.2f}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from faceguard.protect.verify import verify_folders

    checks = verify_folders(args.originals, args.protected, args.eps, args.strict, args.visibility)
    for check in checks:
        if check.problem:
            print(f"verify: {check.rel}: {check.problem}", file=sys.stderr)
        for k, record in enumerate(check.visibility or []):
            print(f"verify: {check.rel}: face {k + 1}: {visibility_line(record)}")
    bad = sum(bool(c.problem) for c in checks)
    lossy = sum(c.lossy and not c.problem for c in checks)
    measured = [c.linf for c in checks if c.linf is not None and not c.lossy]
    worst = f"; largest lossless L-inf {max(measured)}" if measured else ""
    ratios = [r["ratio_jpeg75"] for c in checks for r in c.visibility or [] if r["ratio_jpeg75"] is not None]
    seen = f"; median face FLIP {np.median(ratios):.2f}x a JPEG-75 re-save" if ratios else ""
    print(f"verify: {len(checks)} pairs: {len(checks) - bad} ok, {bad} violations"
          + (f", {lossy} JPEG outputs not held to the bound (--strict)" if lossy and not args.strict else "")
          + worst + seen)
    return 1 if bad or not checks else 0
