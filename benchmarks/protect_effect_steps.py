"""The steps of ``python -m benchmarks protect-effect``, each cached in the work folder.

Photos, profile, the two protected trees (the product's own resumable manifest), crop-level sets
(``.npy``, read back without pickle) and every victim's numbers (``victims/METHOD-seedK.json``)
live in WORK, so an interrupted run resumes where it stopped. A work folder belongs to one set of
settings (``settings.json``); a rerun with other settings must use another ``--work``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from benchmarks.faces_configs import FacesConfig
from benchmarks.faces_pipeline import (FaceData, build_face_model, craft, evaluate_victim, load_photo_faces,
                                       load_yaleb_split, restrict_identities, train_face_model)
from faceguard.gradients import target_gradient
from faceguard.losses import make_loss
from faceguard.profile.store import Profile
from recognition.datasets import ImageTensorDataset
from recognition.face_datasets import select_identities
from recognition.files import write_bytes_atomic

JPEG_QUALITY = 95
TREES = {"png": ("photos-png", ".png"), "jpeg": ("photos-jpeg", ".jpg")}
REENCODED = "protected-png-jpeg"  # the PNG tree's protected photos re-saved as JPEG (JPEG_QUALITY)
Log = Callable[[str], None]


def check_work(work: Path, settings: dict) -> None:
    """Claim ``work`` for ``settings``; refuse a folder made with other settings."""
    path = work / "settings.json"
    text = json.dumps(settings, indent=1, sort_keys=True) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        raise SystemExit(f"protect-effect: {work} was made with other settings ({path}); "
                         "pass another --work or delete the folder")
    write_bytes_atomic(path, text.encode())


def first_images(dataset: ImageTensorDataset, count: int) -> torch.Tensor:
    """Indices of the first ``count`` images of every identity, in dataset order."""
    seen: Counter = Counter()
    keep = []
    for index, label in enumerate(dataset.labels.tolist()):
        if seen[label] < count:
            keep.append(index)
            seen[label] += 1
    return torch.tensor(keep, dtype=torch.int64)


def restrict(data: FaceData, config: FacesConfig, data_dir: Path, identities: int | None,
             images: int | None) -> tuple[FaceData, ImageTensorDataset]:
    """The benchmark data and the native-resolution pre-training images, both limited alike."""
    native = load_yaleb_split(data_dir / "yaleb_cropped.npz", config, None)[0]
    if identities:
        data = restrict_identities(data, identities)
        native = select_identities(native, range(identities))
    if images:
        keep = first_images(data.pretrain, images)
        data = dataclasses.replace(data.subset_test(first_images(data.test, images)), pretrain=data.pretrain.subset(keep))
        native = native.subset(keep)
    return data, native


def write_photos(native: ImageTensorDataset, work: Path) -> list[str]:
    """Every native image as ``photos-png/<identity>/<n>.png`` and ``photos-jpeg/…/<n>.jpg``
    (quality 95); files already there are kept. Returns the stems ``<identity>/<n>`` in order."""
    stems, counts = [], Counter()
    for image, label in zip(native.images, native.labels.tolist()):
        name = native.classes[label]
        stems.append(f"{name}/{counts[name]:03d}")
        counts[name] += 1
        for fmt, (folder, suffix) in TREES.items():
            path = work / folder / (stems[-1] + suffix)
            if not path.is_file():
                buffer = io.BytesIO()
                options = {"quality": JPEG_QUALITY} if fmt == "jpeg" else {}
                Image.fromarray(image[0].numpy(), mode="L").save(buffer, format=fmt.upper(), **options)
                write_bytes_atomic(path, buffer.getvalue())
    return stems


def fit_surrogate(work: Path, config: FacesConfig, device: torch.device, command: str, log: Log) -> Profile:
    """The profile ``faceguard fit --aligned`` makes from the clean PNG photos with the config's recipe."""
    from faceguard.profile.store import load_profile
    from faceguard.profile.fit import FitSettings, fit_profile

    path = work / "profile.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():
        return load_profile(path, device)
    settings = FitSettings(size=config.size, model=config.surrogate, width=config.surrogate_width,
                           embedding=config.embedding, epochs=config.surrogate_epochs,
                           batch_size=config.batch_size, lr=config.lr, seed=0, aligned=True)
    profile = fit_profile([work / TREES["png"][0]], path, settings, device=str(device), command=command,
                          progress=False)
    log(f"profile fitted: train accuracy {profile.config['training']['final_epoch']['train_acc']:.1f} %")
    return profile


@dataclass
class TreeOutcome:
    """One protected tree: its output folder and the product's per-file manifest entries."""

    out: Path
    files: dict[str, dict] = field(default_factory=dict)

    def metrics(self) -> dict:
        """Outcome counts, detection rate, mean losses (clean, crafted, saved), L∞, s/photo."""
        entries = list(self.files.values())
        counts = Counter(entry["status"] for entry in entries)
        done = [e for e in entries if e["status"] == "protected"]
        result = {"photos": len(entries), **{f"photos_{s}": counts[s] for s in ("protected", "no_face", "error")},
                  "detection_rate": round(100 * len(done) / max(len(done) + counts["no_face"], 1), 2)}
        for key in ("clean", "crafted", "saved"):
            values = [e["loss"][key] for e in done if e["loss"][key] is not None]
            result[f"loss_{key}"] = round(float(np.mean(values)), 4) if values else None
        if done:
            result["linf_max"] = max(e["linf"] for e in done)
            result["linf_mean"] = round(float(np.mean([e["linf"] for e in done])), 2)
        seconds = [e["seconds"] for e in entries if "seconds" in e]
        result["seconds_per_photo"] = round(float(np.mean(seconds)), 3) if seconds else None
        return result


def protect_trees(work: Path, profile: Profile, method: str, eps: int, steps: int, aligned: bool,
                  device: torch.device, quiet: bool, log: Log) -> dict[str, TreeOutcome]:
    """Both photo trees through the product's ``protect_folder`` (resumed by its manifest)."""
    from faceguard.protect.manifest import MANIFEST
    from faceguard.protect.protector import Protector
    from faceguard.protect.folder import FolderOptions, protect_folder

    protector = Protector(profile, method=method, eps=eps, steps=steps, device=str(device), aligned=aligned)
    outcomes = {}
    for fmt, (folder, _) in TREES.items():
        out = work / f"protected-{fmt}"
        command = (f"faceguard protect {work / folder} --out {out} --method {method} --eps {eps} --steps {steps} "
                   f"--profile {work / 'profile.safetensors'}{' --aligned' if aligned else ''}")
        summary = protect_folder(work / folder, protector, FolderOptions(out=out, format="keep",
                                 identities="folders", progress=not quiet, command=command))
        log(summary.line())
        outcomes[fmt] = TreeOutcome(out, json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"])
        log(f"protect-{fmt}: {outcomes[fmt].metrics()}")
    return outcomes


@dataclass
class TrainingSets:
    """What each victim trains on: photo-level sets (one per method) and crop-level ones (per seed)."""

    photos: dict[str, ImageTensorDataset]
    crafted: dict[tuple[str, int], ImageTensorDataset] = field(default_factory=dict)
    stats: dict[tuple[str, int], dict] = field(default_factory=dict)

    def get(self, method: str, seed: int) -> ImageTensorDataset:
        return self.photos[method] if method in self.photos else self.crafted[(method, seed)]


def read_back(work: Path, stems: list[str], native: ImageTensorDataset, config: FacesConfig, data: FaceData,
              outcomes: dict[str, TreeOutcome]) -> TrainingSets:
    """Read the clean and the saved protected photos back as the benchmark prepares Yale B, and the
    protected PNG photos re-saved as JPEG (``protect-png-jpeg``: the same noise as ``protect-png``
    through the JPEG arm's re-encoding, which tells re-encoding apart from the JPEG tree's own noise).

    A photo the product failed on has no output: it is left out of that set (and counted in the
    tree's ``error``). The clean PNG set must equal the benchmark's own crops bit for bit.
    """
    photos = {}
    for fmt, (folder, suffix) in TREES.items():
        files = [stem + suffix for stem in stems]
        photos["clean" if fmt == "png" else "clean-jpeg"] = load_photo_faces(
            work / folder, files, native.labels, native.classes, config)
        present = [k for k, name in enumerate(files) if (outcomes[fmt].out / name).is_file()]
        photos[f"protect-{fmt}"] = load_photo_faces(outcomes[fmt].out, [files[k] for k in present],
                                                    native.labels[present], native.classes, config)
        if fmt == "png":
            jpegs = reencode(outcomes[fmt].out, [files[k] for k in present], work / REENCODED)
            photos["protect-png-jpeg"] = load_photo_faces(work / REENCODED, jpegs, native.labels[present],
                                                          native.classes, config)
    if not torch.equal(photos["clean"].images, data.pretrain.images):
        raise RuntimeError("the clean PNG photos read back differ from the benchmark's crops")
    return TrainingSets(photos)


def reencode(folder: Path, files: list[str], out: Path) -> list[str]:
    """Each ``folder/<file>`` re-saved as ``out/<file>.jpg`` at :data:`JPEG_QUALITY` (rewritten when
    missing or older than its source); returns the new names, in order."""
    names = []
    for name in files:
        source, target = folder / name, (out / name).with_suffix(".jpg")
        if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
            buffer = io.BytesIO()
            with Image.open(source) as image:
                image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
            write_bytes_atomic(target, buffer.getvalue())
        names.append(target.relative_to(out).as_posix())
    return names


class ChannelsToRGB(nn.Module):
    """A profile's surrogate (three-channel input) fed the benchmark's one-channel crops."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1), labels)


def crop_level_sets(work: Path, config: FacesConfig, profile: Profile, clean: ImageTensorDataset, eps: int,
                    methods: tuple[str, ...], seeds: list[int], sets: TrainingSets, log: Log) -> None:
    """The face benchmark's crop-level sets of ``methods`` (e.g. ``alignment-joint`` and ``random``),
    crafted with the profile's surrogate on the clean crops (cached as ``crop-level/METHOD-epsE-seedS.npy``)."""
    surrogate = ChannelsToRGB(profile.model).eval()
    target = None
    for method in methods:
        for seed in seeds:
            stem = work / "crop-level" / f"{method}-eps{eps}-seed{seed}"
            if not stem.with_suffix(".npy").is_file():
                if target is None and method.startswith("alignment"):
                    target = target_gradient(surrogate, clean, batch_size=config.eval_batch,
                                             loss_fn=make_loss("rce", label_in_forward=config.margin_losses))
                crafted, stats = craft(config, method, surrogate, target, clean, eps, seed)
                buffer = io.BytesIO()
                np.save(buffer, crafted.images.numpy(), allow_pickle=False)
                write_bytes_atomic(stem.with_suffix(".npy"), buffer.getvalue())
                write_bytes_atomic(stem.with_suffix(".json"), json.dumps(stats).encode())
                log(f"{method} seed {seed}: crafted {stats}")
            images = torch.from_numpy(np.load(stem.with_suffix(".npy"), allow_pickle=False))
            sets.crafted[(method, seed)] = ImageTensorDataset(images, clean.labels, clean.classes)
            sets.stats[(method, seed)] = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))


def images_sha256(dataset: ImageTensorDataset) -> str:
    """SHA-256 of a set's uint8 images: which pixels a victim really trained on."""
    return hashlib.sha256(dataset.images.contiguous().numpy().tobytes()).hexdigest()


def run_victims(work: Path, config: FacesConfig, data: FaceData, sets: TrainingSets,
                plan: list[tuple[str, int, int]], metrics: list[str], device: torch.device, log: Log) -> list[dict]:
    """One fresh victim per (method, ε, seed), seed 1000 + seed as in ``faces``; cached per run. A
    cached run is trained again when it lacks one of ``metrics`` (measured before that metric
    existed) or was trained on other images (its ``train_sha256``: e.g. a tree protected again
    under new settings)."""
    runs = []
    classes = len(data.pretrain.classes)
    for method, eps, seed in plan:
        path = work / "victims" / f"{method}-seed{seed}.json"
        train_set = sets.get(method, seed)
        digest = images_sha256(train_set)
        run = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not set(metrics) <= set(run) or run.get("train_sha256") != digest:
            victim = build_face_model(config, config.victim, config.victim_width, classes, 1000 + seed)
            train_acc = train_face_model(victim, train_set, config, config.victim_epochs, 1000 + seed, device)
            text = json.dumps({"method": method, "eps": eps, "victim": config.victim, "defense": "none", "seed": seed,
                               **evaluate_victim(victim, data, config), "victim_train_acc": round(train_acc, 4),
                               "train_images": len(train_set), "train_sha256": digest,
                               **sets.stats.get((method, seed), {})}, indent=1)
            write_bytes_atomic(path, text.encode())
            run = json.loads(text)  # as a rerun reads it back
            log(f"victim {method} seed {seed}: top1 {run['top1']:.2f}, top5 {run['top5']:.2f}")
        runs.append(run)
    return runs
