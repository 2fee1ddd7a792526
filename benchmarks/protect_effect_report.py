"""Results of ``python -m benchmarks protect-effect``: shared-format JSON and a Markdown report.

Rows are the per-seed victim runs averaged by :func:`benchmarks.results.summarize`. ``top1_drop``
and ``cross_light_top1_drop`` (%) are computed per seed against the matching clean row of the same seed (``clean`` for the PNG
and crop-level rows, ``clean-jpeg`` for ``protect-jpeg``) and then averaged like any metric. The
product's per-tree numbers (outcomes, detection rate, alignment losses from its manifest, L∞,
seconds per photo) are added to the ``protect-*`` rows.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.faces_configs import DROP_METRICS
from benchmarks.results import format_cell, markdown_table, summarize, write_markdown, write_results


def add_drops(runs: list[dict], baseline: dict[str, str | None]) -> list[dict]:
    """Each run with ``{metric}_drop`` = 100 (1 − metric / metric of its baseline method, same seed)
    for the :data:`DROP_METRICS` metrics it has."""
    value = {(run["method"], run["seed"], m): run[m] for run in runs for m in DROP_METRICS if m in run}
    out = []
    for run in runs:
        drops = {}
        for metric in DROP_METRICS:
            reference = value.get((baseline.get(run["method"]), run["seed"], metric))
            if reference is not None and metric in run:
                drops[f"{metric}_drop"] = round(100 * (1 - run[metric] / reference), 4)
        out.append({**run, **drops})
    return out


def _loss_cell(row: dict) -> str:
    """Alignment loss A: clean → crafted → saved file for the product, the crafted batch A crop-level."""
    if "loss_crafted" in row:
        return " → ".join("–" if row.get(f"loss_{k}") is None else f"{row[f'loss_{k}']:.3f}"
                          for k in ("clean", "crafted", "saved"))
    return format_cell(row, "alignment_loss")


def write_report(name: str, record: dict, command: str, runs: list[dict], metrics: list[str],
                 extras: dict[str, dict], baseline: dict[str, str | None], out_dir: Path) -> Path:
    """Write ``out_dir/{name}.json`` and ``.md`` (with ``{name}.findings.md`` appended when present)."""
    order = list(baseline)
    rows = summarize(add_drops(runs, baseline), metrics)
    rows.sort(key=lambda row: order.index(row["method"]))
    for row in rows:
        row.update(extras.get(row["method"], {}))
    path = write_results(name, record, command, rows, out_dir)
    drops = [m for m in DROP_METRICS if m in metrics]
    header = ["method", "ε", "seeds", *metrics, *(f"{m.replace('_', ' ')} drop" for m in drops), "vs", "photos protected / no face / error",
              "A clean → crafted → saved", "L∞ max", "s / photo", "clean-train acc"]
    lines = []
    for row in rows:
        photos = (f"{row['photos_protected']} / {row['photos_no_face']} / {row['photos_error']}"
                  if "photos" in row else "–")
        lines.append([row["method"], row["eps"], ",".join(map(str, row["seeds"])),
                      *(format_cell(row, m) for m in metrics), *(format_cell(row, f"{m}_drop") for m in drops),
                      baseline[row["method"]] or "–", photos, _loss_cell(row), row.get("linf_max", "–"),
                      row.get("seconds_per_photo", "–"), format_cell(row, "clean_train_acc")])
    config, profile = record["config"], record["profile"]
    mode = "each photo one pre-cropped face (`--aligned`)" if record["aligned"] else "MTCNN detection"
    summary = (
        f"Yale B {config['size']}² ({config['channels']} ch), split {config['num_test']} test identities "
        f"(seed {config['split_seed']}); photos written at 168×192 (PNG, JPEG quality {record['jpeg_quality']}). "
        f"Surrogate: `fit_profile --aligned` on the clean PNG photos, {profile['model']} ×{profile['width']}, "
        f"{profile['size']}², {profile['epochs']} epochs, batch {profile['batch_size']}, lr {profile['lr']} "
        f"(train acc {record['profile_train_acc']:.1f} %; the profile's CosFace head is s = 64, m = 0.35). "
        f"Product: `faceguard protect` ε = {record['eps']}, {record['steps']} steps, {mode}, format kept. "
        f"Crop-level rows: `faces_pipeline.craft` with the profile's surrogate, {config['steps']} steps × "
        f"{config['restarts']} restart, backend {config['backend']}. Victims: {config['victim']} "
        f"×{config['victim_width']}, {config['victim_epochs']} epochs, seed 1000 + seed. "
        f"This invocation: {record['seconds']} s on {record['device']}, {record['threads']} thread(s) "
        "(steps already cached in the work folder are not redone).")
    text = (f"# Does `faceguard protect` protect? ({name})\n\n`{command}`\n\n{summary}\n\n"
            "top1/top5: leave-one-out kNN identification (%) on the clean test identities; cross_light_top1: "
            "their images lit more than 12.5° off the camera axis identified against their frontally lit ones "
            "(Yale B subset 1); orl: 10-fold verification accuracy (%); drops: relative to the row named in *vs*, "
            "same seeds; A: the crafting "
            "loss, for alignment 1 − cos(T, ∇θ CE), for adversarial the CE toward the next identity's head row, "
            "for error-minimizing the CE of the classifier trained alongside the noise (product: per photo, "
            "clean / crafted / re-read from the saved file, means "
            "from its manifest; crop-level: the crafted batch loss); clean-train acc: the victim's accuracy on "
            "the clean pre-training crops.\n\n" + markdown_table(header, lines))
    write_markdown(path.with_suffix(".md"), text)
    return path
