"""Results of ``python -m benchmarks recognizers``: shared-format JSON, a Markdown report and an
image grid (face crops before / after / amplified difference for three people).

The Markdown has one table per metric of each threat model, with a column per method and ε (the
``clean`` column first) and a line per recognizer and defense, then the quality table and notes on
what each recognizer is to the protection (white-box or held out). ``NAME.findings.md``, when
present beside the results, is appended (written by hand after reading the numbers).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.results import markdown_table, write_results
from recognition.files import write_bytes_atomic

if TYPE_CHECKING:
    from benchmarks.recognizers_data import Sample
    from benchmarks.recognizers_models import Embeddings

METRICS = {"gallery": {"match_rate": "same-person match rate of clean probes at the recognizer's threshold",
                       "top1": "nearest-neighbour top-1 among everyone's enrolled photos"},
           "scraper-fit": {"logreg_top1": "logistic regression top-1 on clean probes",
                           "centroid_top1": "cosine nearest-centroid top-1 on clean probes"}}
TITLES = {"gallery": "Threat model 2: the released photos are the gallery",
          "scraper-fit": "Threat model 3: a scraper fits a classifier on the released photos"}
GRID_MARGIN = 0.5  # the grid shows the face box grown by this fraction of its size


def _column(row: dict) -> str:
    return "clean" if row["method"] == "clean" else f"{row['method']} ε{row['eps']}"


def metric_table(rows: list[dict], threat_model: str, metric: str) -> str:
    """Recognizer × defense lines, one column per method and ε, values in [0, 1]."""
    mine = [r for r in rows if r["threat_model"] == threat_model and r["metric"] == metric]
    columns = list(dict.fromkeys(_column(r) for r in mine))
    cells = {(r["recognizer"], r["defense"], _column(r)): r["value"] for r in mine}
    lines = []
    for recognizer, defense in dict.fromkeys((r["recognizer"], r["defense"]) for r in mine):
        lines.append([recognizer, defense, *(f"{cells[(recognizer, defense, c)]:.2f}"
                                             if (recognizer, defense, c) in cells else "–" for c in columns)])
    return markdown_table(["recognizer", "defense", *columns], lines)


def _mean_min(values: dict, key: str, digits: int) -> str:
    if f"{key}_mean" not in values:
        return "–"
    return f"{values[f'{key}_mean']:.{digits}f} ({values[f'{key}_min']:.{digits}f})"


def _median(values: dict, key: str, digits: int = 3) -> str:
    return f"{values[key]:.{digits}f}" if values.get(key) is not None else "–"


def quality_table(rows: list[dict]) -> str:
    """One line per protected method and ε: outcomes, SSIM/PSNR mean (min), the face box's FLIP,
    CIEDE2000 and FLIP ratio to JPEG-75 / JPEG-90 re-saves (median over faces), L∞, s/photo."""
    found: dict[str, dict] = {}
    for row in rows:
        if row["threat_model"] == "quality":
            found.setdefault(_column(row), {})[row["metric"]] = row["value"]
    lines = [[column, f"{v.get('photos_protected', 0)} / {v.get('photos_no_face', 0)} / {v.get('photos_error', 0)}",
              _mean_min(v, "ssim_photo", 4), _mean_min(v, "psnr_photo", 1), _mean_min(v, "ssim_face", 4),
              _mean_min(v, "psnr_face", 1), _median(v, "flip_face_median"), _median(v, "ciede2000_face_median", 2),
              _median(v, "ratio_jpeg75_face_median", 2), _median(v, "ratio_jpeg90_face_median", 2),
              v.get("linf_max", "–"), v.get("seconds_per_photo", "–")]
             for column, v in found.items()]
    return markdown_table(["protection", "protected / no face / error", "SSIM photo, mean (min)",
                           "PSNR photo dB, mean (min)", "SSIM face, mean (min)", "PSNR face dB, mean (min)",
                           "FLIP face, median", "ΔE00 face, median", "FLIP ÷ JPEG-75, median",
                           "FLIP ÷ JPEG-90, median", "L∞ max", "s / photo"], lines)


def _notes(config: dict) -> str:
    """What each recognizer is to each protection (white-box or unseen), and how thresholds were set."""
    lines = []
    for name, info in config["recognizers"].items():
        seen = [m for m in config["methods"] if m in info["seen_by"]]
        unseen = [m for m in config["methods"] if m not in info["seen_by"]]
        kind = "; ".join(part for part in (
            f"**white-box** for {', '.join(seen)} (its crafting uses this model)" if seen else "",
            f"**unseen** by {', '.join(unseen)}" if unseen else "") if part)
        values = list(info["thresholds"].values())
        if info["threshold"] is not None:
            rule = (f"fixed threshold: Euclidean distance below {info['threshold']:g}" if info["metric"] == "euclidean"
                    else f"fixed threshold: cosine similarity at least {info['threshold']:g}")
        else:
            rule = (f"{info['metric']} threshold fitted per person at FAR {config['far']:g} on the clean impostor "
                    f"pairs of all *other* people (leave-one-person-out; {min(values):.3f}–{max(values):.3f})")
        lines.append(f"- `{name}`: {info['note']}; {kind}; {rule}.")
    unseen = [f"`{name}`" for name, info in config["recognizers"].items() if not info["seen_by"]]
    held_out = [f"`{name}`" for name, info in config["recognizers"].items() if info.get("held_out")]
    if unseen:
        lines.append(f"- Not crafted with by any protection here: {', '.join(unseen)}. A recognizer's rows for a "
                     "protection that did not craft with it measure **transfer**; white-box rows are optimistic "
                     "for a recognizer you do not know.")
    else:
        lines.append("- Every recognizer here is used by some protection's crafting; only the rows of protections "
                     "that did not craft with a recognizer measure transfer.")
    lines.append(f"- **Held out** from every choice of settings (never tuned on): {', '.join(held_out)}; every other "
                 "recognizer's rows have been used to choose settings (tuning sets)." if held_out else
                 "- **No recognizer here is held out**: every one's rows have been used to choose settings.")
    return "\n".join(lines)


def write_report(name: str, config: dict, command: str, rows: list[dict], out_dir: Path,
                 grid: Path | None) -> Path:
    """Write ``out_dir/{name}.json`` and ``.md``; returns the JSON path."""
    out_dir = Path(out_dir)
    path = write_results(name, config, command, rows, out_dir)
    settings = "; ".join(f"{method}: " + ", ".join(f"{k} {v}" for k, v in s.items())
                         for method, s in config["settings"].items())
    datasets = " and ".join(f"`{d}/`" for d in config["datasets"])
    summary = (
        f"{config['people']} people of {datasets} with ≥ 2 photos"
        + (f" (the **{config['half']}** half: every other person by name)" if config.get("half") else "")
        + f": {config['released']} released photos "
        "(every other one per person in manifest order; protected, format kept), "
        f"{config['probes']} clean probes ({config['probes_with_face']} with a face MTCNN finds). "
        f"Protection settings ({settings}); ε in 0–255 levels. Defenses act on the released photos before "
        f"enrolment or fitting: JPEG quality 75 re-save, half-size bicubic downscale (Pillow). "
        f"This invocation: {config['seconds']} s on {config['device']}, {config['threads']} thread(s) "
        "(protected trees and embeddings already in the work folder are reused).")
    text = [f"# Recognizers vs photos protected by `faceguard protect` ({name})", f"`{command}`", summary,
            "Recognizers:\n" + _notes(config)]
    for threat_model, metrics in METRICS.items():
        text.append(f"## {TITLES[threat_model]}")
        for metric, meaning in metrics.items():
            text.append(f"`{metric}`: {meaning}.\n\n" + metric_table(rows, threat_model, metric))
    text.append("## Quality of the protected photos\n\nWhole photo: the product's manifest (saved file vs "
                "original); face: the main face's MTCNN box grown by 20 % for SSIM (mean over R, G, B) and PSNR, the "
                "box itself for FLIP (LDR, 67 pixels per degree) and CIEDE2000, each also measured on a JPEG-75 and "
                "JPEG-90 re-save of the original (ratio below 1: less visible than that re-save). Seconds: protection time per photo "
                "as the manifest recorded it.\n\n" + quality_table(rows))
    if grid is not None:
        text.append(f"![before / after / amplified difference]({grid.name})")
    findings = out_dir / f"{name}.findings.md"
    if findings.exists():
        text.append(findings.read_text(encoding="utf-8"))
    write_bytes_atomic(path.with_suffix(".md"), ("\n\n".join(part.rstrip() for part in text) + "\n").encode("utf-8"))
    return path


def write_grid(path: Path, released: Sequence[Sample], trees: dict, embeddings: Embeddings,
               people: int = 3) -> Path | None:
    """Face crops of the first released photo of up to ``people`` people that every method
    protected: the original, then per method the protected crop and its amplified difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.recognizers_metrics import grown_box
    from faceguard.protect.photo import read_photo
    from faceguard.protect.report import amplified_difference

    protected = {key: value for key, value in trees.items() if value[2]}
    chosen, persons = [], set()
    for sample in released:
        box = embeddings.box(sample.source)
        if sample.person in persons or box is None or not protected:
            continue
        if all(entries[sample.rel].get("status") == "protected" for _, _, entries in protected.values()):
            chosen.append((sample, box))
            persons.add(sample.person)
        if len(chosen) == people:
            break
    if not chosen:
        return None
    columns = 1 + 2 * len(protected)
    fig, axes = plt.subplots(len(chosen), columns, figsize=(2.2 * columns, 2.4 * len(chosen)), squeeze=False)
    for line, (sample, box) in zip(axes, chosen):
        before = read_photo(sample.source).pixels
        rows, cols = grown_box(box, before.shape, GRID_MARGIN)
        panels = [(f"{sample.person}: original", before[rows, cols])]
        for (method, eps), (_, files, _) in protected.items():
            after = read_photo(files[sample.rel]).pixels[rows, cols]
            panels += [(f"{method} ε{eps:g}", after),
                       (f"difference ×{127 / eps:.0f}", amplified_difference(before[rows, cols], after, eps))]
        for ax, (title, image) in zip(line, panels):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
