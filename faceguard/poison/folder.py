"""``faceguard poison``: protect a whole image-classification dataset on disk, chunk by chunk.

In: an ImageFolder tree (``DATA/<class>/<image>``) or the CIFAR-10 JPEG tree (``DATA/train/<class>``).
Out: the same tree of lossless PNGs (``OUT/<class>/<stem>.png``). The data set is never held in
memory: images are decoded batch by batch, the target gradient is accumulated by streaming, and
each protected batch is written (atomically) as soon as it is crafted. The ImageNet setting crafts
in chunks of 25,000 images with a fresh target-gradient estimate per chunk (``target="chunk"``);
``target="all"`` takes one estimate over the whole set first. A chunk is marked done in
``OUT/.faceguard-poison/`` when all its files are written, and inside an unfinished chunk every
batch whose files all exist is skipped, so an interrupted run resumes where it stopped. Batch k is
seeded with ``seed + k``, so resuming gives the files an uninterrupted run would.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from faceguard.attacks import build_attack
from faceguard.gradients import load_gradient, model_device, save_gradient, target_gradient, trainable_params
from faceguard.poison.craft import craft_batch
from faceguard.progress import showing_progress
from faceguard.registry import METHODS, is_data_free
from faceguard.settings import SETTINGS_VERSION, CraftSettings
from recognition.datasets import decode_image, scan_image_folder
from recognition.distributed import DistributedContext, all_reduce_sum, barrier
from recognition.files import save_png_atomic, write_json_atomic

STATE_DIR = ".faceguard-poison"
TARGETS = ("chunk", "all")
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that rotate by 90°


def resolve_root(data_dir: Path) -> Path:
    """The ImageFolder root: ``data_dir`` itself, or its ``train/`` split (CIFAR JPEG tree)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_dir}")
    folders = {p.name for p in data_dir.iterdir() if p.is_dir()}
    return data_dir / "train" if "train" in folders and folders <= {"train", "test"} else data_dir


@dataclass
class FolderIndex:
    """Every image of an ImageFolder tree: relative paths, labels (class index), class names."""

    root: Path
    files: list[Path]
    labels: list[int]
    classes: list[str]

    @classmethod
    def scan(cls, root: Path) -> FolderIndex:
        entries = scan_image_folder(root)
        classes = sorted(entries)
        files, labels = [], []
        for label, name in enumerate(classes):
            for _, path in sorted(entries[name], key=lambda entry: entry[0]):
                files.append(Path(path).relative_to(root))
                labels.append(label)
        if not files:
            raise ValueError(f"{root}: no images in <class>/<image> sub-folders")
        outputs = [f.with_suffix(".png") for f in files]
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"{root}: two images map to one output name (e.g. a.jpg and a.png in one class)")
        return cls(root, files, labels, classes)

    def output(self, out_dir: Path, index: int) -> Path:
        return out_dir / self.files[index].with_suffix(".png")


class FolderImages(Dataset):
    """Lazily decoded images (float [C, H, W] in [0, 1], label) of some indices of a FolderIndex."""

    def __init__(self, index: FolderIndex, indices: list[int], size: int | None = None) -> None:
        self.index, self.indices, self.size = index, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def uint8(self, i: int) -> torch.Tensor:
        k = self.indices[i]
        path = self.index.root / self.index.files[k]
        return torch.tensor(decode_image(str(path), path, self.size)).permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.uint8(i).float().div_(255), self.index.labels[self.indices[i]]


def image_shape(path: Path, size: int | None) -> tuple[int, int]:
    """(H, W) after EXIF rotation (and resizing to ``size``), read from the header only."""
    if size is not None:
        return size, size
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in _SWAPPING_ORIENTATIONS:
            width, height = height, width
    return height, width


def shape_batches(images: FolderImages, batch_size: int) -> list[list[int]]:
    """Batches of positions in ``images`` whose images share a shape (order kept within a shape)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, k in enumerate(images.indices):
        by_shape.setdefault(image_shape(images.index.root / images.index.files[k], images.size), []).append(i)
    return [group[s:s + batch_size] for group in by_shape.values() for s in range(0, len(group), batch_size)]


@dataclass
class PoisonJob:
    """One ``faceguard poison`` run: the crafting settings plus how the folder is split and what the
    target gradient is taken over (recorded in the state folder; a rerun must match)."""

    settings: CraftSettings = field(default_factory=CraftSettings)
    chunk_size: int = 25_000
    target: str = "chunk"
    target_fraction: float = 1.0
    size: int | None = None

    @property
    def corpus(self) -> bool:
        """The method crafts a whole chunk at once (e.g. error-minimizing noise): the chunk is held
        in memory, crafted by one process and written when it is done."""
        return bool(getattr(METHODS.get(self.settings.method), "corpus", False))

    @property
    def needs_trained_surrogate(self) -> bool:
        """Whether the method crafts with a trained surrogate: not for methods that train their own
        copy alongside (``corpus``) or use no network at all (``data_free``: random noise,
        autoregressive perturbations)."""
        return not (self.corpus or is_data_free(self.settings.method))

    def record(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "settings"}, "settings": self.settings.to_dict()}


def poison_folder(data_dir: Path, out_dir: Path, model: nn.Module, job: PoisonJob, progress: bool = True,
                  context: DistributedContext | None = None) -> dict:
    """Protect every image of ``data_dir`` into ``out_dir``; returns the run summary (also saved).

    Under torchrun (``context`` from ``init_distributed``) rank r crafts batches r, r + W, … of every
    chunk and the target gradient is summed over all ranks' shares. Batches, their seeds and T do
    not depend on the number of processes (T is accumulated in float64), so W processes write the
    files one process would.
    """
    context = context or DistributedContext(rank=0, world_size=1, device=model_device(model))
    if job.target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {job.target!r}")
    if job.chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if job.corpus and context.world_size > 1:
        raise ValueError(f"method {job.settings.method!r} crafts each chunk as a whole in one process; "
                         "run it without torchrun")
    root = resolve_root(Path(data_dir))
    index = FolderIndex.scan(root)
    state = Path(out_dir) / STATE_DIR
    if context.is_main:
        _check_job(state, job)
    barrier(context)
    chunks = [list(range(s, min(s + job.chunk_size, len(index.files))))
              for s in range(0, len(index.files), job.chunk_size)]
    target = _whole_set_target(model, index, job, state, context) if job.target == "all" else None
    bar = tqdm(total=len(index.files), desc="poison", unit="img", disable=not (progress and context.is_main))
    records, batch_counter = [], 0
    with showing_progress(progress and context.is_main):  # a corpus method reports its rounds
        for number, chunk in enumerate(chunks):
            marker = state / f"chunk-{number:05d}.json"
            images = FolderImages(index, chunk, job.size)
            batches = shape_batches(images, job.settings.batch_size)
            if marker.exists():
                records.append(json.loads(marker.read_text()))
                bar.update(len(chunk))
            else:
                records.append(_poison_corpus_chunk(model, images, batch_counter, job, out_dir, bar)
                               if job.corpus else
                               _poison_chunk(model, images, batches, batch_counter, job, out_dir, target, bar, context))
                barrier(context)
                if context.is_main:
                    write_json_atomic(marker, records[-1])
            batch_counter += len(batches)
    bar.close()
    summary = {"root": str(root), "images": len(index.files), "classes": index.classes, "chunks": records,
               "processes": context.world_size, "job": job.record()}
    if context.is_main:
        write_json_atomic(state / "summary.json", summary)
    barrier(context)
    return summary


def _mine(batches: list[list[int]], first_batch: int, context: DistributedContext) -> list[tuple[int, list[int]]]:
    """(global batch number, batch) pairs this rank handles: numbers ≡ rank (mod world size)."""
    numbered = [(first_batch + k, b) for k, b in enumerate(batches)]
    return [(n, b) for n, b in numbered if n % context.world_size == context.rank]


def _poison_chunk(model: nn.Module, images: FolderImages, batches: list[list[int]], first_batch: int,
                  job: PoisonJob, out_dir: Path, target: list | None, bar: tqdm, context: DistributedContext) -> dict:
    start = time.perf_counter()
    if METHODS.get(job.settings.method).needs_target and target is None:
        target = _streamed_target(model, images, batches, first_batch, job, context)
    attack = build_attack(model, job.settings, target)
    totals = torch.zeros(3, dtype=torch.float64, device=context.device)  # loss sum, batches with a loss, written
    for number, batch in _mine(batches, first_batch, context):
        outputs = [images.index.output(out_dir, images.indices[i]) for i in batch]
        if not all(p.exists() for p in outputs):
            x = torch.stack([images.uint8(i) for i in batch])
            y = torch.tensor([images.index.labels[images.indices[i]] for i in batch])
            protected, loss = craft_batch(attack, x, y, seed=job.settings.seed + number)
            for image, path in zip(protected, outputs):
                save_png_atomic(image.permute(1, 2, 0).numpy(), path)
            if loss == loss:
                totals[0] += loss
                totals[1] += 1
            totals[2] += len(batch)
        bar.update(len(batch) * context.world_size)
    loss_sum, with_loss, written = all_reduce_sum(totals, context).tolist()
    return {"images": len(images), "written": int(written), "seconds": round(time.perf_counter() - start, 1),
            "mean_loss": loss_sum / with_loss if with_loss else None}


def _poison_corpus_chunk(model: nn.Module, images: FolderImages, first_batch: int, job: PoisonJob, out_dir: Path,
                         bar: tqdm) -> dict:
    """Craft the whole chunk in one call (seeded with ``seed`` + the chunk's first batch number) and
    write every file; an interrupted chunk is crafted again whole, to the same files."""
    start = time.perf_counter()
    pixels = [images.uint8(i) for i in range(len(images))]
    shapes = {tuple(p.shape) for p in pixels}
    if len(shapes) > 1:
        raise ValueError(f"{images.index.root}: method {job.settings.method!r} crafts the chunk as one tensor, "
                         f"but its images have {len(shapes)} sizes; pass --size")
    x = torch.stack(pixels)
    y = torch.tensor([images.index.labels[k] for k in images.indices])
    attack = build_attack(model, job.settings)
    protected, loss = craft_batch(attack, x, y, seed=job.settings.seed + first_batch)
    for i, image in enumerate(protected):
        save_png_atomic(image.permute(1, 2, 0).numpy(), images.index.output(out_dir, images.indices[i]))
    bar.update(len(images))
    return {"images": len(images), "written": len(images), "seconds": round(time.perf_counter() - start, 1),
            "mean_loss": None if loss != loss else loss}


def _streamed_target(model: nn.Module, images: FolderImages, batches: list[list[int]], first_batch: int,
                     job: PoisonJob, context: DistributedContext) -> list:
    """Target gradient over ``images`` (or a seeded ``fraction`` of them), decoded batch by batch,
    each rank summing its share of the batches in float64, then summed over ranks."""
    if job.target_fraction < 1.0:
        generator = torch.Generator().manual_seed(job.settings.seed)
        count = max(1, round(job.target_fraction * len(images)))
        keep = set(torch.randperm(len(images), generator=generator)[:count].tolist())
        batches = [[i for i in batch if i in keep] for batch in batches]
    mine = [b for _, b in _mine(batches, first_batch, context) if b]
    params = trainable_params(model)
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    if mine:
        for acc, g in zip(total, target_gradient(model, DataLoader(images, batch_sampler=mine), params,
                                                 accumulate_dtype=torch.float64)):
            acc.add_(g)
    return [all_reduce_sum(t, context).to(p.dtype) for t, p in zip(total, params)]


def _whole_set_target(model: nn.Module, index: FolderIndex, job: PoisonJob, state: Path,
                      context: DistributedContext) -> list:
    """One target-gradient estimate over the whole set, cached in the state folder for resumes."""
    path = state / "target.safetensors"
    if path.exists():
        return load_gradient(path, context.device)
    images = FolderImages(index, list(range(len(index.files))), job.size)
    grads = _streamed_target(model, images, shape_batches(images, job.settings.batch_size), 0, job, context)
    if context.is_main:
        save_gradient(grads, path)
    return grads


def _check_job(state: Path, job: PoisonJob) -> None:
    """Record the job, or refuse to resume an output folder made with other settings."""
    path = state / "job.json"
    record = job.record()
    if path.exists():
        previous = json.loads(path.read_text())
        version = previous.get("settings", {}).get("version")
        try:  # an older version this one still reads is compared in today's layout
            previous["settings"] = CraftSettings.from_dict(previous.get("settings", {})).to_dict()
        except (TypeError, ValueError):
            raise ValueError(f"{state.parent}: made by another faceguard version (crafting settings version "
                             f"{version}, this one writes {SETTINGS_VERSION}); use a new --out folder") from None
        current = json.loads(json.dumps(record))
        if previous != current:
            changed = sorted(k for k in current if k != "settings" and previous.get(k) != current[k])
            changed += sorted(k for k, v in current["settings"].items() if previous["settings"].get(k) != v)
            raise ValueError(f"{state.parent}: made with other settings ({', '.join(changed)}); "
                             "use a new --out folder")
        return
    write_json_atomic(path, record)
