"""``python -m benchmarks frontier RESULTS.json ...``: protection against visibility, one plot.

Reads results files of ``python -m benchmarks recognizers`` and plots, for each recognizer, the
same-person match rate of clean probes (threat model 2, no defense; lower = better protection)
against the median face FLIP of the protected photos as a multiple of a JPEG-75 re-save of the
same faces (lower = less visible; 1 = as visible as JPEG-75, the issue's target line). A protection
label ending in ``-seedN`` is a crafting seed of the label without it: the points of one label are
joined by their mean, and its spread over seeds is drawn as error bars (min to max), one colour
per label, one marker per ε. Writes ``OUT/NAME.png`` and ``OUT/NAME.md`` (the table the plot
draws, with the commands of the results files).
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.results import RESULTS_DIR, markdown_table, write_markdown
from recognition.cli import add_out_option

NAME = "frontier"
SEED = re.compile(r"-seed\d+$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path, help="results files of python -m benchmarks recognizers")
    parser.add_argument("--recognizers", nargs="+", help="recognizers to plot (default: every one in the files)")
    parser.add_argument("--metric", default="match_rate", choices=("match_rate", "top1"),
                        help="threat-model-2 metric on the y axis")
    parser.add_argument("--defense", default="none", help="defense whose rows are plotted")
    add_out_option(parser, "folder for NAME.png / NAME.md", default=RESULTS_DIR)
    parser.add_argument("--name", default=NAME, help="output file name")


def collect(paths: list[Path], metric: str, defense: str) -> dict[tuple[str, int], dict]:
    """(label without its seed, ε) → {"ratio": [per seed], recognizer: [per seed], "commands": set}."""
    points: dict[tuple[str, int], dict] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        quality = {(r["method"], r["eps"]): r["value"] for r in data["rows"]
                   if r["threat_model"] == "quality" and r["metric"] == "ratio_jpeg75_face_median"
                   and r["value"] is not None}
        for (method, eps), ratio in quality.items():
            point = points[(SEED.sub("", method), eps)]
            point["ratio"].append(ratio)
            point["commands"].append(data["command"])
            for row in data["rows"]:
                if (row["method"], row["eps"], row["metric"], row["defense"]) == (method, eps, metric, defense):
                    point[row["recognizer"]].append(row["value"])
    return points


def spread(values: np.ndarray) -> list[list[float]]:
    """Error-bar lengths below and above the mean of `values` (min to max); never negative, since the
    mean of equal floats can land an ulp outside them."""
    mean = values.mean()
    return [[max(mean - values.min(), 0.0)], [max(values.max() - mean, 0.0)]]


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = collect(args.results, args.metric, args.defense)
    if not points:
        raise SystemExit("no protected trees with visibility numbers in these results files")
    found = sorted({key for point in points.values() for key in point if key not in ("ratio", "commands")})
    names = args.recognizers or found
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    labels = sorted({label for label, _ in points})
    colours = {label: plt.cm.tab10(k % 10) for k, label in enumerate(labels)}
    markers = {8: "v", 12: "s", 16: "o"}
    for axis, name in zip(axes[0], names):
        for (label, eps), point in sorted(points.items()):
            if not point.get(name):
                continue
            x, y = np.asarray(point["ratio"]), np.asarray(point[name])
            axis.errorbar(x.mean(), y.mean(), xerr=spread(x), yerr=spread(y), fmt=markers.get(eps, "D"),
                          color=colours[label], label=f"{label} ε{eps}", capsize=2)
        axis.axvline(1.0, color="grey", linestyle="--", linewidth=1)
        axis.text(1.05, 0.5, "JPEG-75 (target ≤ 1×)", rotation=90, color="grey", fontsize=7, va="center",
                  transform=axis.get_xaxis_transform())
        axis.set(title=name, xlabel="face FLIP ÷ JPEG-75 re-save (median)", ylabel=f"{args.metric} ({args.defense})",
                 ylim=(-0.02, 1.02), xlim=(0, None))
    handles, texts = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, texts, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08 + 0.025 * (len(texts) // 3), 1, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    image = args.out / f"{args.name}.png"
    fig.savefig(image, dpi=110)
    plt.close(fig)
    lines = []
    for (label, eps), point in sorted(points.items()):
        ratio = np.asarray(point["ratio"])
        cells = [f"{np.mean(point[n]):.2f} ({min(point[n]):.2f}–{max(point[n]):.2f})" if point.get(n) else "–"
                 for n in names]
        lines.append([label, eps, len(ratio), f"{ratio.mean():.2f} ({ratio.min():.2f}–{ratio.max():.2f})", *cells])
    commands = sorted({c for point in points.values() for c in point["commands"]})
    (least_label, least_eps), least = min(points.items(), key=lambda item: np.mean(item[1]["ratio"]))
    gap = ("Issue #32's target is a face FLIP ≤ that of the JPEG-75 re-save (1×, the dashed line), so the "
           "FLIP ÷ JPEG-75 column is each point's multiple of the target; the least visible point here, "
           f"`{least_label}` at ε = {least_eps}, is {np.mean(least['ratio']):.2f}×.")
    text = "\n\n".join([
        f"# Protection against visibility ({args.name})",
        f"`{args.command_line}`",
        f"y: `{args.metric}` of clean probes against the released protected photos (threat model 2, defense "
        f"`{args.defense}`); x: median face FLIP as a multiple of a JPEG-75 re-save of the same faces. Mean "
        "(min–max) over crafting seeds.",
        markdown_table(["protection", "ε", "seeds", "FLIP ÷ JPEG-75", *names], lines),
        gap,
        f"![frontier]({image.name})",
        "Results files' commands:\n\n" + "\n".join(f"- `{c}`" for c in commands)])
    write_markdown(args.out / f"{args.name}.md", text + "\n")
    print(f"frontier: wrote {image} and {args.out / (args.name + '.md')}")
    return 0
