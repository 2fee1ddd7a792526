"""Results files shared by every benchmark: JSON rows with mean ± standard error, Markdown, a plot.

Format (other tools read it): ``{"config": {...}, "command": "...", "rows": [...]}``; each row has
``method``, ``eps`` (integer, /255; 0 for clean), ``victim``, ``defense``, ``seeds`` (list) and, for
each metric, the mean over seeds plus ``<metric>_stderr`` (standard error of the mean; 0 for one seed).
Per-seed numbers are kept under ``runs`` so nothing measured is lost.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from recognition.files import write_bytes_atomic, write_json_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROW_KEYS = ("method", "eps", "victim", "defense")


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / √n; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def summarize(runs: Iterable[dict], metrics: Sequence[str]) -> list[dict]:
    """Group per-seed runs by (method, eps, victim, defense) and average each metric over seeds.

    Every run is a dict with the ROW_KEYS, ``seed`` and the metric values; extra keys (e.g.
    ``alignment_loss``) are averaged too when numeric and present in every run of the group.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[tuple(run[k] for k in ROW_KEYS)].append(run)
    rows = []
    for key, group in groups.items():
        row = dict(zip(ROW_KEYS, key))
        row["seeds"] = sorted(run["seed"] for run in group)
        extra = [k for k in group[0] if k not in (*ROW_KEYS, "seed", *metrics)
                 and all(isinstance(run.get(k), (int, float)) for run in group)]
        for metric in (*metrics, *extra):
            mean, err = mean_stderr([float(run[metric]) for run in group])
            row[metric], row[f"{metric}_stderr"] = round(mean, 4), round(err, 4)
        row["runs"] = [{k: v for k, v in run.items() if k not in ROW_KEYS} for run in group]
        rows.append(row)
    return rows


def write_results(name: str, config: dict, command: str, rows: list[dict],
                  out_dir: str | Path = RESULTS_DIR) -> Path:
    """Write ``{out_dir}/{name}.json`` in the shared results format and return its path."""
    return write_json_atomic(Path(out_dir) / f"{name}.json", {"config": config, "command": command, "rows": rows})


def write_markdown(path: Path, text: str) -> Path:
    """Write the Markdown report ``path`` atomically, with the hand-written account of what was
    tried, ``{stem}.findings.md`` in the same folder, appended after a blank line when present."""
    findings = path.with_name(f"{path.stem}.findings.md")
    if findings.exists():
        text += "\n" + findings.read_text(encoding="utf-8")
    return write_bytes_atomic(path, text.encode("utf-8"))


def format_cell(row: dict, metric: str) -> str:
    """``mean ± stderr`` (stderr omitted for one seed), or ``–`` when the row lacks the metric."""
    if metric not in row:
        return "–"
    if len(row.get("seeds", [])) > 1:
        return f"{row[metric]:.2f} ± {row[f'{metric}_stderr']:.2f}"
    return f"{row[metric]:.2f}"


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table from a header and rows of already formatted cells."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def plot_metric_vs_eps(rows: list[dict], metric: str, path: str | Path, title: str,
                       series_key: str = "victim", method_prefix: str = "alignment",
                       defense: str = "none") -> Path:
    """Plot ``metric`` against ε: one line per (method, series) for methods starting with
    ``method_prefix``, each starting from that series' clean row at ε = 0; other methods at their ε
    as markers. Error bars are standard errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["defense"] == defense and metric in r]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for series in sorted({r[series_key] for r in rows}):
        mine = [r for r in rows if r[series_key] == series]
        clean = [r for r in mine if r["method"] == "clean"]
        for method in sorted({r["method"] for r in mine if r["method"].startswith(method_prefix)}):
            points = sorted(clean + [r for r in mine if r["method"] == method], key=lambda r: r["eps"])
            ax.errorbar([r["eps"] for r in points], [r[metric] for r in points],
                        yerr=[r.get(f"{metric}_stderr", 0) for r in points], marker="o", capsize=3,
                        label=f"{method} · {series}")
        for method in sorted({r["method"] for r in mine} - {"clean"}):
            if not method.startswith(method_prefix):
                points = [r for r in mine if r["method"] == method]
                ax.errorbar([r["eps"] for r in points], [r[metric] for r in points],
                            yerr=[r.get(f"{metric}_stderr", 0) for r in points], marker="x",
                            linestyle="none", capsize=3, label=f"{method} · {series}")
    ax.set_xlabel("ε (/255)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
