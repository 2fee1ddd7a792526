"""``python -m benchmarks classification --config cifar10-cpu``: the paper's CIFAR-10 experiments.

train surrogate → target gradient → craft every poison of the config (alignment joint/independent
at each ε, baselines, variations) → train fresh victims from scratch on each protected copy (with
defenses) → clean test accuracy, averaged over seeds → ``benchmarks/results/{config}.{json,md,png}``.

Everything expensive is cached in the work folder (``runs/classification/{config}`` by default):
the surrogate, target gradients, poisoned copies (uint8 safetensors) and one JSON line per finished
victim run, so an interrupted run continues where it stopped and ``--extras`` reuses the headline
runs. Poisons are crafted once (crafting seed 0, or the ``-cN`` seed of their label); the seeds are
the victims' training seeds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmarks.classification_configs import CLEAN, ClassificationConfig, Net, Poison, Row, get_config
from benchmarks.classification_report import write_report
from benchmarks.defenses import ADVTRAIN_STEPS, adversarial_training_loss, apply_data_defense, train_dp_sgd
from benchmarks.results import RESULTS_DIR, summarize
from faceguard.gradients import load_gradient, save_gradient, target_gradient
from faceguard.attacks import build_attack
from faceguard.poison.craft import craft_tensor_dataset
from faceguard.registry import METHODS
from faceguard.settings import CraftSettings
from recognition.checkpoint import load_model, save_checkpoint
from recognition.cli import add_data_option, add_device_option, add_out_option, add_set_option
from recognition.datasets import ImageTensorDataset, default_data_dir, load_cifar10
from recognition.device import resolve_device
from recognition.files import file_sha256, write_json_atomic
from recognition.models import create_model
from recognition.training import TrainConfig, evaluate_accuracy, train_classifier

METRIC = "accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="cifar10-cpu, cifar10-cpu-poisons, cifar10-gpu or cifar10-paper")
    parser.add_argument("--extras", action="store_true",
                        help="also run defenses, regularisers, target subsets and split surrogates")
    add_set_option(parser, "override scalar config fields")
    parser.add_argument("--only", nargs="+", default=None, metavar="METHOD",
                        help="method labels to run, exactly as in the results "
                             "(e.g. clean alignment-joint alignment-joint-t10)")
    parser.add_argument("--eps", type=int, nargs="+", default=None, help="ε values to run (clean rows always run)")
    parser.add_argument("--victims", nargs="+", default=None, help="victims to run (default: all)")
    parser.add_argument("--defenses", nargs="+", default=None, help="defenses to run (e.g. none; default: all)")
    add_data_option(parser)
    parser.add_argument("--work", default=None, help="cache folder (default runs/classification/CONFIG)")
    add_out_option(parser, "folder for NAME.json/.md/.png", default=RESULTS_DIR)
    parser.add_argument("--name", default=None, help="results file name (default: the config name)")
    add_device_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (per worker with --jobs)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes sharing the rows (each poison and its victims stay in one worker)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_config(args.config, args.set)
    overrides = dict(item.split("=", 1) for item in args.set)  # as recorded in the results
    rows = select_rows(config.rows + (config.extra_rows if args.extras else []), args.only, args.victims, args.eps,
                       args.defenses)
    work = Path(args.work or f"runs/classification/{config.name}")
    bench = ClassificationBenchmark(config, args.data or default_data_dir(), work,
                                    resolve_device(args.device))
    headline = set(config.rows)
    if args.jobs > 1:
        bench.prepare(rows)
        run_in_workers(bench, rows, headline, args.jobs, args.threads or max(1, (os.cpu_count() or 1) // args.jobs))
    runs = bench.run_rows(rows, config.seeds, config.extra_seeds, headline)
    name = args.name or config.name
    paths = write_report(name, bench.describe(overrides, rows), args.command_line, summarize(runs, [METRIC]),
                         args.out, bench.timings)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def select_rows(rows: list[Row], only: Collection[str] | None, victims: Collection[str] | None,
                eps: Collection[int] | None = None, defenses: Collection[str] | None = None) -> list[Row]:
    """Rows whose method label (exact) / victim / ε / defense is in the given filters
    (None keeps all; clean rows pass the ε filter)."""
    methods = set(only) if only else None
    wanted = set(victims) if victims else None
    eps_values = set(eps) if eps else None
    kept_defenses = set(defenses) if defenses else None
    return [r for r in rows if (methods is None or r.poison.label in methods)
            and (wanted is None or r.victim in wanted)
            and (eps_values is None or r.poison == CLEAN or r.poison.eps in eps_values)
            and (kept_defenses is None or r.defense in kept_defenses)]


DEFENSE_COST = {"dpsgd": 3.0, "advtrain": 3.0}  # training cost relative to a plain victim (balancing only)
# Relative cost of one crafting step per image, in forward+backward passes (issue #8's measurements),
# only used to balance the rows between workers.
CRAFT_PASSES = {"alignment-joint": 3.4, "alignment-independent": 2.3, "tensorclog": 4.4, "unlearnable": 1.0,
                "random": 0.0, "adversarial": 1.0, "error-minimizing": 12.0, "error-minimizing-classwise": 12.0,
                "autoregressive": 0.0, "synthetic": 0.0}


def fingerprint(settings: dict) -> str:
    """A short stable hash of a JSON-able dict."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def poison_steps(config: ClassificationConfig, poison: Poison) -> int:
    """Crafting steps of a poison: its own, else its method's in the config, else the config's
    (baselines: ``baseline_steps`` if set)."""
    if poison.steps:
        return poison.steps
    if "steps" in config.method_settings.get(poison.method, {}):
        return config.method_settings[poison.method]["steps"]
    return config.steps if poison.method.startswith("alignment") else (config.baseline_steps or config.steps)


def poison_step_size(config: ClassificationConfig, poison: Poison) -> float:
    """Crafting step size of a poison: its method's in the config, else the config's."""
    return config.method_settings.get(poison.method, {}).get("step_size", config.step_size)


def split_rows(config: ClassificationConfig, rows: list[Row], headline: set[Row], jobs: int) -> list[list[Row]]:
    """Rows in ``jobs`` groups of about equal estimated cost; all rows of one poison go to the same
    group, so every poison is crafted exactly once (longest-first greedy assignment)."""
    by_poison: dict[Poison, list[Row]] = {}
    for row in rows:
        by_poison.setdefault(row.poison, []).append(row)

    def cost(poison: Poison) -> float:
        total = CRAFT_PASSES.get(poison.method, 0.0) * poison_steps(config, poison) * config.restarts
        for row in by_poison[poison]:
            seeds = len(config.seeds if row in headline else config.extra_seeds)
            total += seeds * config.victims[row.victim].epochs * DEFENSE_COST.get(row.defense, 1.0)
        return total

    groups: list[list[Row]] = [[] for _ in range(jobs)]
    loads = [0.0] * jobs
    for poison in sorted(by_poison, key=cost, reverse=True):
        lightest = loads.index(min(loads))
        groups[lightest] += by_poison[poison]
        loads[lightest] += cost(poison)
    return [g for g in groups if g]


def run_in_workers(bench: ClassificationBenchmark, rows: list[Row], headline: set[Row], jobs: int,
                   threads: int) -> None:
    """Run the rows in ``jobs`` processes; each appends its finished victim runs to ``runs.jsonl``."""
    tasks = [(bench.config, bench.archive.parent, bench.work, str(bench.device), threads, group, headline)
             for group in split_rows(bench.config, rows, headline, jobs)]
    with ProcessPoolExecutor(len(tasks), mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(_worker, task) for task in tasks]:
            future.result()


def _worker(task: tuple) -> None:
    config, data_dir, work, device, threads, rows, headline = task
    torch.set_num_threads(threads)
    ClassificationBenchmark(config, data_dir, work, torch.device(device)).run_rows(
        rows, config.seeds, config.extra_seeds, headline)


class ClassificationBenchmark:
    """Runs the rows of one config with caching in ``work``."""

    def __init__(self, config: ClassificationConfig, data_dir: Path, work: Path, device: torch.device) -> None:
        self.config, self.device, self.work = config, device, work
        # every batch has one of a few fixed shapes, so let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = device.type == "cuda"
        self.archive = data_dir / "cifar10_jpeg.tar.gz"
        self.train = load_cifar10(self.archive, "train", per_class=config.train_per_class, seed=0)
        self.test = load_cifar10(self.archive, "test", per_class=config.test_per_class, seed=0)
        self.timings: dict[str, float] = {}
        self.crafting: dict[str, dict] = {}
        work.mkdir(parents=True, exist_ok=True)

    # ---- surrogate and target gradient -------------------------------------------------------
    def surrogate(self, part: tuple[int, int] | None = None) -> torch.nn.Module:
        """The surrogate trained on all training images, or on part j of k (split surrogates)."""
        net = self.config.surrogate
        name = "surrogate" if part is None else f"surrogate-part{part[0]}of{part[1]}"
        path = self.work / f"{name}.safetensors"
        if path.exists():
            return load_model(path, self.device)
        data = self.train if part is None else self.train.subset(self._part(part))
        start = time.perf_counter()
        model = self._train(net, data, seed=0)
        self.timings[f"{name} training (s)"] = round(time.perf_counter() - start, 1)
        save_checkpoint(model, path, {"model": net.model, "num_classes": 10, "width": net.width,
                                      "test_acc": evaluate_accuracy(model, self.test, device=self.device)})
        return model.eval()

    def target(self, model: torch.nn.Module, fraction: float, part: tuple[int, int] | None = None) -> list:
        """Reverse-CE target gradient on the (part of the) training set, from a random ``fraction``."""
        name = f"target-t{fraction:g}" + ("" if part is None else f"-part{part[0]}of{part[1]}")
        path = self.work / f"{name}.safetensors"
        if path.exists():
            return load_gradient(path, self.device)
        data = self.train if part is None else self.train.subset(self._part(part))
        start = time.perf_counter()
        grads = target_gradient(model, data, fraction=fraction, seed=0, batch_size=256)
        self.timings[f"{name} (s)"] = round(time.perf_counter() - start, 1)
        save_gradient(grads, path)
        return grads

    def _part(self, part: tuple[int, int]) -> torch.Tensor:
        j, k = part
        return torch.randperm(len(self.train), generator=torch.Generator().manual_seed(0))[j::k]

    def prepare(self, rows: list[Row]) -> None:
        """Train every surrogate and target gradient the rows need (before workers start, so that
        they only read them)."""
        for poison in {r.poison for r in rows if r.poison != CLEAN}:
            k = round(1 / poison.split_fraction)
            for part in [None] if k == 1 else [(j, k) for j in range(k)]:
                model = self.surrogate(part)
                if poison.method.startswith("alignment"):
                    self.target(model, poison.target_fraction, part)

    # ---- poisons -------------------------------------------------------------------------------
    def poisoned(self, poison: Poison) -> ImageTensorDataset:
        """The training set protected by ``poison`` (cached as uint8 safetensors)."""
        if poison == CLEAN:
            return self.train
        path = self.work / "poisons" / f"{poison.key}.safetensors"
        meta_path = path.with_suffix(".json")
        if not path.exists():
            images, meta = self._craft(poison)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"images": images}, str(path))
            write_json_atomic(meta_path, meta)
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") != self.craft_recipe(poison):
            raise ValueError(f"{path} was crafted with other settings ({meta.get('recipe')} vs "
                             f"{self.craft_recipe(poison)}): use another --work folder or delete it")
        self.crafting[poison.key] = meta
        return ImageTensorDataset(load_file(str(path))["images"], self.train.labels, self.train.classes)

    def _craft(self, poison: Poison) -> tuple[torch.Tensor, dict]:
        cfg = self.config
        steps = poison_steps(cfg, poison)
        settings = CraftSettings.from_label(
            poison.method, eps=poison.eps, steps=steps, restarts=cfg.restarts, step_size=poison_step_size(cfg, poison),
            augment=cfg.augment, backend=poison.backend or cfg.backend, regularizer=poison.regularizer or "none",
            reg_weight=poison.reg_weight, batch_size=cfg.craft_batch, seed=poison.seed)
        k = round(1 / poison.split_fraction)
        parts = [None] if k == 1 else [(j, k) for j in range(k)]
        images, losses, seconds = self.train.images.clone(), [], 0.0
        for part in parts:
            model = self.surrogate(part)
            needs_target = METHODS.get(settings.method).needs_target
            target = self.target(model, poison.target_fraction, part) if needs_target else None
            index = torch.arange(len(self.train)) if part is None else self._part(part)
            attack = build_attack(model, settings, target)
            outcome = craft_tensor_dataset(attack, self.train.images[index], self.train.labels[index],
                                           desc=poison.key)
            images[index] = outcome.images
            losses += outcome.batch_losses
            seconds += outcome.seconds
        finite = [v for v in losses if v == v]
        meta = {"loss": sum(finite) / len(finite) if finite else None, "seconds": round(seconds, 1),
                "steps": steps, "restarts": cfg.restarts, "recipe": self.craft_recipe(poison),
                "linf": int((images.int() - self.train.images.int()).abs().max())}
        print(f"crafted {poison.key}: loss {meta['loss']}, {meta['seconds']} s, L∞ {meta['linf']}/255", flush=True)
        return images, meta

    def craft_recipe(self, poison: Poison) -> str:
        """Fingerprint of everything a cached poison depends on besides its key (crafting settings,
        surrogate recipe, data size), so a changed config never reuses a stale copy."""
        cfg = self.config
        settings = {"steps": poison_steps(cfg, poison), "restarts": cfg.restarts,
                    "step_size": poison_step_size(cfg, poison),
                    "augment": cfg.augment, "backend": poison.backend or cfg.backend, "batch": cfg.craft_batch,
                    "surrogate": asdict(cfg.surrogate), "images": len(self.train)}
        return fingerprint(settings)

    def victim_recipe(self, row: Row) -> str:
        """Fingerprint of how a victim of ``row`` is trained (net, epochs, LR, defense settings) and
        on what (the poison's crafting recipe)."""
        cfg = self.config
        settings = {"net": asdict(cfg.victims[row.victim]), "epoch_scale": cfg.epoch_scale}
        if row.poison != CLEAN:
            settings["poison"] = self.craft_recipe(row.poison)
        if row.defense != "none":
            settings["defense"] = {"eps": cfg.defense_eps, "sigma": cfg.smoothing_sigma, "jpeg": cfg.jpeg_quality,
                                   "clip": cfg.dp_clip, "noise": cfg.dp_noise}
            if row.defense == "advtrain":
                settings["defense"]["pgd_steps"] = ADVTRAIN_STEPS
        return fingerprint(settings)

    # ---- victims -------------------------------------------------------------------------------
    def run_rows(self, rows: list[Row], seeds: tuple[int, ...], extra_seeds: tuple[int, ...],
                 headline: set[Row]) -> list[dict]:
        """Train and test every (row, seed) not yet in ``runs.jsonl`` with the same victim recipe;
        return all runs of ``rows``."""
        log = self.work / "runs.jsonl"
        done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        key = lambda r: (r["method"], r["eps"], r["victim"], r["defense"], r["seed"], r.get("recipe"))  # noqa: E731
        finished = {key(r): r for r in done}
        results = []
        for row in rows:
            for seed in seeds if row in headline else extra_seeds:
                record = {"method": row.poison.label, "eps": row.poison.eps, "victim": row.victim,
                          "defense": row.defense, "seed": seed, "recipe": self.victim_recipe(row)}
                if key(record) not in finished:
                    record.update(self._victim_run(row, seed))
                    with log.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    print(json.dumps(record), flush=True)
                    finished[key(record)] = record
                results.append(finished[key(record)])
        return results

    def _victim_run(self, row: Row, seed: int) -> dict:
        net = self.config.victims[row.victim]
        data = apply_data_defense(self.poisoned(row.poison), row.defense, self.config.defense_eps,
                                  self.config.smoothing_sigma, self.config.jpeg_quality)
        start = time.perf_counter()
        model = self._train(net, data, seed, defense=row.defense)
        result = {METRIC: evaluate_accuracy(model, self.test, device=self.device),
                  "seconds": round(time.perf_counter() - start, 1)}
        if row.poison != CLEAN:
            result["craft_loss"] = self.crafting[row.poison.key]["loss"]
        return result

    def _train(self, net: Net, data, seed: int, defense: str = "none") -> torch.nn.Module:
        """A fresh ``net`` trained on ``data``; the training-time defenses change how (DP-SGD, or
        adversarial training at ``defense_eps``)."""
        torch.manual_seed(seed)
        model = create_model(net.model, num_classes=10, width=net.width)
        epochs = max(1, round(net.epochs * self.config.epoch_scale))
        config = TrainConfig(epochs=epochs, batch_size=net.batch_size, lr=net.lr, schedule=net.schedule,
                             seed=seed)
        if defense == "dpsgd":
            return train_dp_sgd(model, data, config, self.config.dp_clip, self.config.dp_noise, self.device)
        loss_fn = adversarial_training_loss(self.config.defense_eps / 255) if defense == "advtrain" else None
        train_classifier(model, data, config, device=self.device, progress=False, loss_fn=loss_fn)
        return model.eval()

    def describe(self, overrides: dict[str, str], rows: list[Row]) -> dict:
        """The config as recorded in the results file, with data checksum and crafting statistics."""
        config = asdict(self.config)
        config.pop("rows"), config.pop("extra_rows")
        for poison in {r.poison for r in rows if r.poison != CLEAN}:
            meta = self.work / "poisons" / f"{poison.key}.json"
            if meta.exists():
                self.crafting.setdefault(poison.key, json.loads(meta.read_text()))
        config.update(overrides=overrides, data=self.archive.name, data_sha256=file_sha256(self.archive),
                      train_images=len(self.train), test_images=len(self.test),
                      surrogate_test_acc=json.loads((self.work / "surrogate.json").read_text()).get("test_acc")
                      if (self.work / "surrogate.json").exists() else None,
                      crafting=self.crafting, rows_run=len(rows))
        return config
