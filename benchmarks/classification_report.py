"""Markdown tables in the paper's layout for the classification benchmark (Tables 2–6, 8, 9)."""
from __future__ import annotations

import re
from pathlib import Path

from benchmarks.defenses import DEFENSES
from benchmarks.results import (format_cell, markdown_table, mean_stderr, plot_metric_vs_eps, write_markdown,
                               write_results)
from faceguard.settings import ERROR_MINIMIZING_METHODS

METRIC = "accuracy"
CRAFT_SEED = re.compile(r"^(?P<family>.+)-c(?P<seed>\d+)$")  # alignment-joint-c3: crafting seed 3
CLASSIC_METHODS = ("clean", "random", "tensorclog", "unlearnable", "alignment-independent", "alignment-joint")
OTHER_FAMILIES = ("adversarial", *ERROR_MINIMIZING_METHODS, "autoregressive", "synthetic")  # issue #18's poisons
METHOD_ORDER = CLASSIC_METHODS + OTHER_FAMILIES


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
    methods = [m for m in METHOD_ORDER if _find(rows, m, 0 if m == "clean" else 8, grey)]
    if methods:
        out.append(f"\n## Methods at ε = 8, grey-box {grey} victim (Tables 2 and 4)\n")
        out.append(markdown_table(["method", "accuracy", "× clean"], [
            [m, _cell(_find(rows, m, 0 if m == "clean" else 8, grey)),
             _ratio(_find(rows, m, 0 if m == "clean" else 8, grey), clean_grey)] for m in methods]))
    out += _methods_by_eps(rows, grey, methods) + _methods_by_victim(rows, victims, methods)
    eps_values = sorted({r["eps"] for r in rows if r["method"] == "alignment-joint" and r["defense"] == "none"})
    if eps_values:
        out.append("\n## Alignment (joint) against each victim (Table 3; ResNet-18 is grey-box)\n")
        lines = []
        for v in victims:
            clean = _find(rows, "clean", 0, v)
            lines.append([v, _cell(clean)] + [_cell(_find(rows, "alignment-joint", e, v)) for e in eps_values]
                         + [_ratio(_find(rows, "alignment-joint", 8, v), clean)])
        out.append(markdown_table(["victim", "clean"] + [f"ε={e}" for e in eps_values] + ["ε=8 × clean"], lines))
    out += _defenses(rows, grey, methods)
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


def _compared(poisons: list[str]) -> bool:
    """Whether the method sections are worth a table: two poisons or more, or one of issue #18's
    (a config of its own, such as cifar10-cpu-ar, beside its clean rows)."""
    return len(poisons) > 1 or bool(set(poisons) & set(OTHER_FAMILIES))


def _methods_by_eps(rows: list[dict], grey: str, methods: list[str]) -> list[str]:
    """Every method (beyond alignment) at every ε it was crafted with, on the grey-box victim."""
    poisons = [m for m in methods if m != "clean" and len({r["eps"] for r in rows if r["method"] == m}) > 1]
    if not _compared(poisons):
        return []
    eps_values = sorted({r["eps"] for r in rows if r["method"] in poisons and r["defense"] == "none"})
    clean = _find(rows, "clean", 0, grey)
    return [f"\n## Every method against ε, grey-box {grey} victim\n",
            markdown_table(["method", "clean"] + [f"ε={e}" for e in eps_values] + [f"ε={e} × clean" for e in eps_values],
                           [[m, _cell(clean)] + [_cell(_find(rows, m, e, grey)) for e in eps_values]
                            + [_ratio(_find(rows, m, e, grey), clean) for e in eps_values] for m in poisons])]


def _methods_by_victim(rows: list[dict], victims: list[str], methods: list[str]) -> list[str]:
    """Every method at ε = 8 against every victim (black-box transfer), as × clean of that victim."""
    poisons = [m for m in methods if m != "clean" and sum(bool(_find(rows, m, 8, v)) for v in victims) > 1]
    if not _compared(poisons):
        return []
    lines = [["clean"] + [_cell(_find(rows, "clean", 0, v)) for v in victims]]
    lines += [[m] + [f"{_cell(_find(rows, m, 8, v))} ({_ratio(_find(rows, m, 8, v), _find(rows, 'clean', 0, v))})"
                     for v in victims] for m in poisons]
    return [f"\n## Every method at ε = 8 against each victim ({victims[0]} is grey-box; × clean in brackets)\n",
            markdown_table(["method", *victims], lines)]


def defense_table(rows: list[dict], grey: str, methods: list[str]) -> tuple[list[str], list[str], list[list]]:
    """(defenses, poisons, accuracies): each ε = 8 poison's and clean data's grey-box accuracy under
    every defense that was run on at least one poison (``none`` first); None where not run."""
    defenses = [d for d in DEFENSES if any(_find(rows, m, 8, grey, d) for m in methods if m != "clean")]
    poisons = [m for m in methods if m != "clean" and any(_find(rows, m, 8, grey, d) for d in defenses[1:])]
    table = [[(_find(rows, "clean", 0, grey, d) if m == "clean" else _find(rows, m, 8, grey, d))
              for d in defenses] for m in ["clean", *poisons]]
    return defenses, poisons, [[r[METRIC] if r else None for r in line] for line in table]


def _defenses(rows: list[dict], grey: str, methods: list[str]) -> list[str]:
    """Table 6 for every method: defense × (clean data, each ε = 8 poison), and each poison's mean
    accuracy over no defense and the defenses (what the default is chosen by)."""
    defenses, poisons, table = defense_table(rows, grey, methods)
    if len(defenses) < 2:
        return []
    title = "Defenses against ε = 8 alignment (Table 6)" if poisons == ["alignment-joint"] else \
        f"Defenses against every ε = 8 poison, grey-box {grey} victim (Table 6 for every method)"
    lines = [[d] + [_cell(_find(rows, "clean", 0, grey, d))]
             + [_cell(_find(rows, m, 8, grey, d)) for m in poisons] for d in defenses]
    if len(poisons) > 1:
        cells = []
        for line in table:
            present = [v for v in line if v is not None]
            cells.append(f"{sum(present) / len(present):.2f}" + ("" if len(present) == len(line) else " (incomplete)")
                         if present else "–")
        lines.append(["mean over the rows above", *cells])
    return [f"\n## {title}\n", markdown_table(["defense", "clean data", *poisons], lines)]


def plot_defenses(rows: list[dict], grey: str, path: Path, title: str) -> Path | None:
    """Grouped bars: accuracy of the grey-box victim per defense, one bar per poison (and clean)."""
    defenses, poisons, table = defense_table(rows, grey, [m for m in METHOD_ORDER if m != "clean"])
    if len(defenses) < 2 or len(poisons) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(table)
    for i, (label, line) in enumerate(zip(["clean", *poisons], table)):
        xs = [j + i * width for j, v in enumerate(line) if v is not None]
        ax.bar(xs, [v for v in line if v is not None], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(defenses))], defenses)
    ax.set_ylabel(f"{METRIC} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    paths.append(write_markdown(out_dir / f"{name}.md", markdown(name, config, command, rows)))
    methods = {r["method"] for r in rows}
    if any(m.startswith("alignment") for m in methods) and not methods & set(OTHER_FAMILIES):
        paths.append(plot_metric_vs_eps(rows, METRIC, out_dir / f"{name}.png",
                                        f"{name}: victim test accuracy vs ε"))
    elif methods - {"clean"}:  # several families: one line per method on the grey-box victim, and the defenses
        grey = [r for r in rows if r["victim"] == "resnet18"]
        paths.append(plot_metric_vs_eps(grey, METRIC, out_dir / f"{name}.png",
                                        f"{name}: grey-box resnet18 accuracy vs ε", method_prefix=""))
        defended = plot_defenses(rows, "resnet18", out_dir / f"{name}-defenses.png",
                                 f"{name}: ε = 8 poisons under each defense (resnet18)")
        paths += [defended] if defended else []
    return paths
