"""``python -m benchmarks crafting-levers``: what two shortcuts of evasion crafting would save, and cost.

Issue #34 asks for ``faceguard protect`` at ≤ 2.0 s per photo "at equal protection". Two of its
levers change which passes a crafting step makes, so they are tried here, by patching the engine
inside this process only; neither is in the product:

* ``early-stop`` — stop crafting a photo at the first step at which every face has, for every
  ensemble member, its in-loop cosine to its anchor below that member's goal (:data:`GOALS`,
  ``--goals``). The in-loop cosine is the one the step reads (scraper augmentation drawn).
* ``sface-every-2`` — pass SFace forward and backward only at every second step (steps 0, 2, ...);
  in between, reuse its last gradient with respect to Δ. SFace is two thirds of the members' time
  (crafting-costs.md).

``base`` is the product as shipped. Each variant protects the released photos of ``--half`` of the
recognizers benchmark's people with protect's defaults (``--method evade --strength mid``; the
visibility numbers are off, as they cost the same in every variant) through ``protect_folder``,
one variant after another in this process, so run it on an idle machine. Per variant it reports
the crafting steps and seconds per photo, the passes per member, and the *saved loss* of each face:
the mean over the ensemble of the cosine between the saved photo's embedding and the clean one
(what the manifest's ``loss.saved`` holds; lower protects more), compared face by face with base.
The base run also traces each member's in-loop cosine at every step, so the report says at which
step each face would first pass every goal.

Every member here is white-box (crafted through), and no recognizer is held out: a variant whose
saved loss is worse on the crafting members cannot give equal protection elsewhere, so this is a
test a shortcut must pass before the recognizers benchmark is worth running, not a protection
number. Writes ``benchmarks/results/crafting-levers.{json,md}``.
"""
from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

from recognition.cli import add_data_option, add_device_option, add_out_option

NAME = "crafting-levers"
VARIANTS = ("base", "early-stop", "sface-every-2")
# In-loop cosine goals (unit embeddings against the face's clean one). SFace: OpenCV's same-person
# threshold. dlib-resnet: its Euclidean 0.6 between two descriptors of norm 1.5 (real faces have
# 1.3-1.7), 1 − 0.6² / (2 · 1.5²). profile: the recognizers benchmark's 1 %-FAR thresholds on the
# tuning half's clean photos are 0.65-0.68 (recognizers-s24-tune-free-12.json).
GOALS = {"profile": 0.67, "dlib-resnet": 0.92, "sface": 0.363}
SLOW_MEMBER = "sface"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="base is always run first (the others are compared with it)")
    parser.add_argument("--half", choices=("tuning", "held-out"), default="tuning",
                        help="whose released photos are protected (recognizers benchmark's split)")
    parser.add_argument("--people", nargs="+", help="only these people (smoke runs)")
    parser.add_argument("--steps", type=int, help="crafting steps (default: protect's)")
    parser.add_argument("--goals", nargs="+", metavar="MEMBER=COSINE", default=[],
                        help=f"early-stop's goals, over the defaults {GOALS}")
    parser.add_argument("--work", type=Path, default=Path("runs") / NAME, help="released copies and outputs")
    add_data_option(parser)
    add_out_option(parser, "results folder (default benchmarks/results)")
    add_device_option(parser, default="cpu")


def parse_goals(items: list[str]) -> dict[str, float]:
    """:data:`GOALS` with ``MEMBER=COSINE`` overrides; an unknown member or bad number raises."""
    goals = dict(GOALS)
    for item in items:
        member, sep, value = item.partition("=")
        if not sep or member not in GOALS:
            raise SystemExit(f"--goals takes MEMBER=COSINE with MEMBER one of {', '.join(GOALS)}; got {item!r}")
        goals[member] = float(value)
    return goals


class _Stop(Exception):
    """Raised by a step once the previous step found every face past every goal."""


class Recorder:
    """Patches the evasion attack for one variant and records, per crafted photo, the steps run,
    the passes per member and (all variants) the in-loop cosines per step ([members][faces])."""

    def __init__(self, variant: str, goals: dict[str, float]) -> None:
        self.variant, self.goals = variant, goals
        self.photos: list[dict] = []

    @contextmanager
    def patched(self) -> Iterator[None]:
        from faceguard.attacks.base import PGDAttack
        from faceguard.attacks.evasion import EmbeddingAttack

        recorder = self
        descend, step_gradient = PGDAttack._descend, EmbeddingAttack.step_gradient

        def objective(attack, x_in, y):
            cosines = recorder._cosines(attack, x_in, y)
            return (attack.sign * cosines.mean(0)).sum()

        def traced_descend(attack, x, y, delta):
            if not isinstance(attack, EmbeddingAttack):
                return descend(attack, x, y, delta)
            attack._trace, attack._passes = [], dict.fromkeys(attack.settings.ensemble, 0)
            try:
                trace = descend(attack, x, y, delta)
            except _Stop:
                delta.requires_grad_(False)
                trace = []
            recorder.photos.append({"steps": len(attack._trace), "passes": attack._passes, "trace": attack._trace})
            return trace

        def stepping(attack, x, y, delta):
            if recorder.variant == "early-stop" and attack._trace and recorder._past_goals(attack):
                raise _Stop
            if recorder.variant == "sface-every-2" and SLOW_MEMBER in attack.settings.ensemble:
                return recorder._scheduled_step(attack, x, y, delta)
            return step_gradient(attack, x, y, delta)

        with ExitStack() as stack:
            stack.enter_context(mock.patch.object(EmbeddingAttack, "objective", objective))
            stack.enter_context(mock.patch.object(PGDAttack, "_descend", traced_descend))
            stack.enter_context(mock.patch.object(EmbeddingAttack, "step_gradient", stepping))
            yield

    def _cosines(self, attack, x_in, y, skip: int | None = None):
        """Per member (rows) and face, the cosine of the view's unit embedding to its anchor, as
        :func:`faceguard.attacks.evasion.anchor_similarity` takes it; member ``skip`` is not
        passed through (its row is NaN). ``attack.model`` is the photo's
        :class:`faceguard.protect.evasion.PhotoViews`."""
        import torch
        import torch.nn.functional as F

        embeddings = [None if k == skip else F.normalize(attack.model.member(k, x_in), dim=1)
                      for k in range(len(attack.anchors))]
        rows = []
        for k, (e, anchors) in enumerate(zip(embeddings, attack.anchors)):
            if e is None:
                rows.append(torch.full((len(y),), float("nan"), device=x_in.device))
                continue
            attack._passes[attack.settings.ensemble[k]] += 1
            rows.append((e * anchors.to(e.device)[y]).sum(1))
        cosines = torch.stack(rows)
        attack._trace.append(cosines.detach().cpu().tolist())
        return cosines

    def _past_goals(self, attack) -> bool:
        goals = [self.goals.get(name, float("inf")) for name in attack.settings.ensemble]
        return all(value < goal for row, goal in zip(attack._trace[-1], goals) for value in row)

    def _scheduled_step(self, attack, x, y, delta):
        """One step with SFace passed through only at even steps; its last Δ-gradient (and loss
        share) is reused at odd ones."""
        import torch

        slow = attack.settings.ensemble.index(SLOW_MEMBER)
        refresh = len(attack._trace) % 2 == 0
        x_in = attack.model_input(x + delta, y)
        if attack.augment is not None:
            x_in = attack.augment(x_in)
        cosines = self._cosines(attack, x_in, y, skip=None if refresh else slow)
        share = attack.sign / len(attack.anchors)
        rest = share * torch.cat([cosines[:slow], cosines[slow + 1:]]).sum()
        grad = torch.autograd.grad(rest, delta, retain_graph=refresh)[0]
        if refresh:
            slow_loss = share * cosines[slow].sum()
            attack._slow = torch.autograd.grad(slow_loss, delta)[0], float(slow_loss.detach())
        grad = grad + attack._slow[0]
        if attack.regularized:
            penalty = attack._reduce_penalty(attack._penalty(x, delta)).sum()
            grad = grad + torch.autograd.grad(penalty, delta)[0]
        return grad, float(rest.detach()) + attack._slow[1]


def first_past_goals(trace: list, goals: list[float]) -> list[int | None]:
    """Per face, the first step whose in-loop cosines are all below their member's goal (None: never)."""
    faces = len(trace[0][0]) if trace else 0
    return [next((step for step, rows in enumerate(trace)
                  if all(row[face] < goal for row, goal in zip(rows, goals))), None) for face in range(faces)]


def saved_losses(entries: dict) -> dict[tuple[str, int], float]:
    """The manifest's saved loss of each face, by (photo, face index); faces without one are left out."""
    return {(rel, k): face["loss_saved"] for rel, entry in entries.items()
            for k, face in enumerate(entry.get("face_details", [])) if face.get("loss_saved") is not None}


def variant_row(variant: str, recorder: Recorder, entries: dict, seconds: float, base: dict | None) -> dict:
    """The report row of one variant; ``base``: base's :func:`saved_losses`."""
    import numpy as np

    saved = saved_losses(entries)
    photos = recorder.photos
    passes = {name: sum(p["passes"][name] for p in photos) / len(photos) for name in photos[0]["passes"]}
    seconds_per_photo = [e["seconds"] for e in entries.values() if "seconds" in e]
    row = {"variant": variant, "photos": len(photos),
           "faces": sum(len(e.get("face_details", [])) for e in entries.values()),
           "steps_per_photo": round(float(np.mean([p["steps"] for p in photos])), 2),
           "passes_per_photo": {k: round(v, 2) for k, v in passes.items()},
           "seconds_per_photo": round(float(np.mean(seconds_per_photo)), 3),
           "wall_seconds": round(seconds, 1),
           "saved_loss_mean": round(float(np.mean(list(saved.values()))), 4),
           "saved_loss_median": round(float(np.median(list(saved.values()))), 4)}
    if base is not None:
        common = [key for key in saved if key in base]
        change = np.array([saved[key] - base[key] for key in common])
        row |= {"compared_faces": len(common), "worse_faces": int((change > 1e-4).sum()),
                "better_faces": int((change < -1e-4).sum()), "saved_loss_change_mean": round(float(change.mean()), 4)}
    return row


def markdown_report(result: dict) -> str:
    from benchmarks.results import markdown_table

    config, rows = result["config"], result["rows"]
    header = ["variant", "steps / photo", "member passes / photo", "s / photo", "saved loss mean (median)",
              "vs base: worse / better faces", "mean change"]
    lines = [[r["variant"], f"{r['steps_per_photo']:.1f}",
              ", ".join(f"{k} {v:.1f}" for k, v in r["passes_per_photo"].items()),
              f"{r['seconds_per_photo']:.2f}", f"{r['saved_loss_mean']:.4f} ({r['saved_loss_median']:.4f})",
              f"{r['worse_faces']} / {r['better_faces']} of {r['compared_faces']}" if "worse_faces" in r else "–",
              f"{r['saved_loss_change_mean']:+.4f}" if "saved_loss_change_mean" in r else "–"] for r in rows]
    first = [s for s in config["base_first_past_goals"] if s is not None]
    return (f"# Crafting levers: early stopping and a scheduled SFace\n\n`{result['command']}`\n\n"
            f"{config['photos']} released photos of the {config['half']} half, protect's defaults "
            f"({config['settings']['steps']} steps, --strength mid, visibility off), device {config['device']}, "
            f"{config['threads']} thread(s). Every member is white-box; none is held out (see the module doc). "
            f"Early-stop goals (in-loop cosine): {config['goals']}.\n\n{markdown_table(header, lines)}\n\n"
            f"s / photo is the manifest's seconds per photo (detection, crafting, saving). In the base run, "
            f"{len(first)} of {len(config['base_first_past_goals'])} faces had every member past its goal at "
            f"some step, first at steps {sorted(first)}.\n")


def run(args: argparse.Namespace) -> int:
    import torch

    from benchmarks import recognizers_data as data
    from benchmarks.results import RESULTS_DIR, write_markdown, write_results
    from faceguard.protect.folder import FolderOptions, protect_folder
    from faceguard.protect.manifest import read_manifest
    from faceguard.protect.protector import Protector
    from recognition.datasets import default_data_dir

    goals = parse_goals(args.goals)
    people = data.read_people(args.data or default_data_dir(), ("realfaces", "photos"))
    samples = data.split_samples(people, args.people or data.half_of(people, args.half))
    root = data.sync_released(args.work, samples)
    changes = {} if args.steps is None else {"steps": args.steps}
    rows, config, base = [], {}, None
    for variant in dict.fromkeys(["base", *args.variants]):
        out = args.work / variant
        shutil.rmtree(out, ignore_errors=True)
        protector = Protector(method="evade", eps=16, device=args.device, **changes)
        recorder = Recorder(variant, goals)
        start = time.perf_counter()
        with recorder.patched():
            summary = protect_folder(root, protector, FolderOptions(out=out, progress=False, visibility=False,
                                                                    command=f"{NAME} {variant}"))
        seconds = time.perf_counter() - start
        print(f"{NAME}: {variant}: {summary.line()} in {seconds:.0f} s", flush=True)
        entries = read_manifest(out)["files"]
        rows.append(variant_row(variant, recorder, entries, seconds, base))
        if base is None:
            base = saved_losses(entries)
            member_goals = [goals.get(name, float("inf")) for name in protector.settings.ensemble]
            config = {"half": args.half, "photos": len(recorder.photos), "goals": goals, "device": args.device,
                      "threads": torch.get_num_threads(), "settings": protector.settings.to_dict(),
                      "base_first_past_goals": [step for photo in recorder.photos
                                                for step in first_past_goals(photo["trace"], member_goals)]}
    out_dir = Path(args.out or RESULTS_DIR)
    write_results(NAME, config, args.command_line, rows, out_dir)
    text = markdown_report({"config": config, "command": args.command_line, "rows": rows})
    write_markdown(out_dir / f"{NAME}.md", text)
    print(text)
    return 0
