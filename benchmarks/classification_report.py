"""Markdown tables in the paper's layout for the classification benchmark (Tables 2–6, 8, 9)."""
from __future__ import annotations

import re
from pathlib import Path

from benchmarks.defenses import DEFENSES
from benchmarks.results import format_cell, markdown_table, mean_stderr, plot_metric_vs_eps, write_results

METRIC = "accuracy"
CRAFT_SEED = re.compile(r"^(?P<family>.+)-c(?P<seed>\d+)$")  # alignment-joint-c3: crafting seed 3


def _find(rows: list[dict], method: str, eps: int, victim: str, defense: str = "none") -> dict | None:
    wanted = (method, eps, victim, defense)
    return next((r for r in rows if (r["method"], r["eps"], r["victim"], r["defense"]) == wanted), None)


def _cell(row: dict | None) -> str:
    return format_cell(row, METRIC) if row else "–"


def _ratio(row: dict | None, clean: dict | None) -> str:
    return f"{row[METRIC] / clean[METRIC]:.2f}×" if row and clean and clean[METRIC] else "–"


def markdown(name: str, config: dict, command: str, rows: list[dict]) -> str:
    """The whole results page: settings, then one table per experiment that has rows."""
    grey = "resnet18"
    victims = sorted({r["victim"] for r in rows}, key=lambda v: (v != grey, v))
    out = [f"# {name}: test accuracy (%) of victims trained on protected CIFAR-10\n",
           f"Command: `{command}`\n",
           f"Reduced from the paper: {config.get('reduced')}.\n",
           f"Data: `{config.get('data')}` sha256 `{config.get('data_sha256')}`; {config.get('train_images')} "
           f"training / {config.get('test_images')} test images; surrogate test accuracy "
           f"{config.get('surrogate_test_acc')}%. Mean ± standard error over victim seeds; poisons crafted once.\n"]
    clean_grey = _find(rows, "clean", 0, grey)
    methods = [m for m in ("clean", "random", "tensorclog", "unlearnable", "alignment-independent", "alignment-joint")
               if _find(rows, m, 0 if m == "clean" else 8, grey)]
    if methods:
        out.append(f"\n## Methods at ε = 8, grey-box {grey} victim (Tables 2 and 4)\n")
        out.append(markdown_table(["method", "accuracy", "× clean"], [
            [m, _cell(_find(rows, m, 0 if m == "clean" else 8, grey)),
             _ratio(_find(rows, m, 0 if m == "clean" else 8, grey), clean_grey)] for m in methods]))
    eps_values = sorted({r["eps"] for r in rows if r["method"] == "alignment-joint" and r["defense"] == "none"})
    if eps_values:
        out.append("\n## Alignment (joint) against each victim (Table 3; ResNet-18 is grey-box)\n")
        lines = []
        for v in victims:
            clean = _find(rows, "clean", 0, v)
            lines.append([v, _cell(clean)] + [_cell(_find(rows, "alignment-joint", e, v)) for e in eps_values]
                         + [_ratio(_find(rows, "alignment-joint", 8, v), clean)])
        out.append(markdown_table(["victim", "clean"] + [f"ε={e}" for e in eps_values] + ["ε=8 × clean"], lines))
    defenses = [d for d in DEFENSES if _find(rows, "alignment-joint", 8, grey, d)]
    if len(defenses) > 1:
        out.append("\n## Defenses against ε = 8 alignment (Table 6)\n")
        out.append(markdown_table(["defense", "clean data", "protected data"], [
            [d, _cell(_find(rows, "clean", 0, grey, d)), _cell(_find(rows, "alignment-joint", 8, grey, d))]
            for d in defenses]))
    regs = [m for m in ("alignment-joint", "alignment-joint-l2", "alignment-joint-ssim", "alignment-joint-tv")
            if _find(rows, m, 8, grey)]
    if len(regs) > 1:
        out.append("\n## Regularisers at ε = 8 (Table 9)\n")
        out.append(markdown_table(["method", "accuracy"], [[m, _cell(_find(rows, m, 8, grey))] for m in regs]))
    subsets = [("100 %", "alignment-joint"), ("10 %", "alignment-joint-t10"), ("5 %", "alignment-joint-t05")]
    if any(_find(rows, m, 8, grey) for _, m in subsets[1:]):
        out.append("\n## Target gradient from a subset (Table 5)\n")
        out.append(markdown_table(["target from", "ε=4", "ε=8", "ε=16"], [
            [label] + [_cell(_find(rows, m, e, grey)) for e in (4, 8, 16)] for label, m in subsets]))
    splits = [m for m in ("alignment-joint-split10", "alignment-joint-split05", "alignment-independent-split10",
                          "alignment-independent-split05") if _find(rows, m, 8, grey)]
    if splits:
        out.append("\n## Split surrogates at ε = 8 (Table 8)\n")
        out.append(markdown_table(["method", "accuracy"], [[m, _cell(_find(rows, m, 8, grey))]
                                                            for m in ["alignment-joint", *splits]]))
    out += _crafting_seeds(rows, grey, config.get("crafting") or {})
    crafting = config.get("crafting") or {}
    if crafting:
        out.append("\n## Crafting\n")
        out.append(markdown_table(["poison", "kept loss", "seconds", "steps", "max |Δ| (/255)"], [
            [k, "–" if v["loss"] is None else f"{v['loss']:.3f}", v["seconds"], v["steps"], v["linf"]]
            for k, v in sorted(crafting.items())]))
    if config.get("timings"):
        out.append("\n" + ", ".join(f"{k}: {v}" for k, v in config["timings"].items()) + "\n")
    return "\n".join(out)


def _mean_se(values: list[float]) -> str:
    mean, stderr = mean_stderr(values)
    return f"{mean:.2f} ± {stderr:.2f}" if len(values) > 1 else f"{mean:.2f}"


def _crafting_seeds(rows: list[dict], grey: str, crafting: dict) -> list[str]:
    """Poisons crafted with several crafting seeds (``-cN``; no suffix = seed 0) at ε = 8 on the
    grey-box victim: each poison's mean over its victims, their mean ± s.e. over crafting seeds,
    and the difference to ``alignment-joint`` paired by crafting seed (the same random start)."""
    families: dict[str, dict[int, dict]] = {}
    for row in rows:
        if (row["eps"], row["victim"], row["defense"]) == (8, grey, "none") and row["method"].startswith("alignment"):
            match = CRAFT_SEED.match(row["method"])
            family, seed = (match["family"], int(match["seed"])) if match else (row["method"], 0)
            families.setdefault(family, {})[seed] = row
    families = {f: dict(sorted(p.items())) for f, p in families.items() if len(p) > 1}
    if not families:
        return []
    reference = families.get("alignment-joint", {})
    lines = []
    for family, poisons in families.items():
        losses = [crafting.get(f"{r['method']}-eps8", {}).get("loss") for r in poisons.values()]
        losses = [v for v in losses if v is not None]
        paired = [r[METRIC] - reference[s][METRIC] for s, r in poisons.items() if s in reference]
        lines.append([family, ", ".join(map(str, poisons)), " / ".join(f"{r[METRIC]:.2f}" for r in poisons.values()),
                      _mean_se([r[METRIC] for r in poisons.values()]),
                      f"{min(losses):.3f}–{max(losses):.3f}" if losses else "–",
                      _mean_se(paired) if family != "alignment-joint" and len(paired) > 1 else "–"])
    return ["\n## Crafting seeds at ε = 8, grey-box victim (issue #8)\n",
            markdown_table(["poison", "crafting seeds", "per poison (mean over victims)", "mean ± s.e. over poisons",
                            "kept loss", "− alignment-joint, paired by crafting seed"], lines)]


def write_report(name: str, config: dict, command: str, rows: list[dict], out_dir: Path,
                 timings: dict[str, float]) -> list[Path]:
    """Write ``{name}.json`` (shared format), ``{name}.md`` and ``{name}.png`` (accuracy vs ε)."""
    config = {**config, "timings": timings}
    paths = [write_results(name, config, command, rows, out_dir)]
    md = out_dir / f"{name}.md"
    findings = out_dir / f"{name}.findings.md"   # hand-written notes on what was tried, appended
    md.write_text(markdown(name, config, command, rows) + ("\n" + findings.read_text() if findings.exists() else ""))
    paths.append(md)
    if any(r["method"].startswith("alignment") for r in rows):
        paths.append(plot_metric_vs_eps(rows, METRIC, out_dir / f"{name}.png",
                                        f"{name}: victim test accuracy vs ε"))
    return paths
