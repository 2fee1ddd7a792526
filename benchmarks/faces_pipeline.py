"""The steps of the face benchmark: data, models, surrogate, crafting, victim evaluation.

Kept apart from the command (``benchmarks.faces``) so each step can be read and tested alone.
All images stay uint8 in memory; crafting converts one batch at a time, so the protected copy of a
CelebA-sized pre-training set costs one byte per pixel.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from benchmarks.defenses import DATA_DEFENSES, apply_data_defense
from benchmarks.faces_configs import FacesConfig
from faceguard.attacks import build_attack
from faceguard.gradients import target_gradient
from faceguard.losses import make_loss
from faceguard.quantize import quantize_within
from faceguard.registry import METHODS
from faceguard.settings import CraftSettings
from recognition.datasets import ImageTensorDataset, decode_image
from recognition.embeddings import extract_embeddings
from recognition.face_datasets import (CELEBA_IDENTITY_FILE, YALEB_SUBSET_DEGREES, find_in_layout,
                                       load_celeba_identities, load_npz_faces, select_identities, split_identities,
                                       yaleb_light_angles)
from recognition.files import file_sha256
from recognition.heads import MarginClassifier, create_head
from recognition.identification import gallery_identification, knn_identification
from recognition.losses import margin_cross_entropy_loss
from recognition.models import create_model
from recognition.training import TrainConfig, evaluate_accuracy, train_classifier
from recognition.verification import evaluate_pair_set
from recognition.verification_bin import PairSet, read_bin, sample_pairs, write_bin


@dataclass
class FaceData:
    """Pre-training and test identities, verification sets (decoded once) and data checksums.

    ``test_gallery`` (Yale B only) marks the test images lit within 12.5° of the camera axis
    (lighting subset 1): the gallery of the cross-lighting identification, whose probes are the
    test identities' other images.
    """

    pretrain: ImageTensorDataset
    test: ImageTensorDataset
    verification: dict[str, tuple[PairSet, np.ndarray]]
    checksums: dict[str, str]
    test_gallery: torch.Tensor | None = None

    def subset_test(self, keep: torch.Tensor) -> FaceData:
        """The same data with only the test images at indices ``keep``."""
        gallery = None if self.test_gallery is None else self.test_gallery[keep]
        return dataclasses.replace(self, test=self.test.subset(keep), test_gallery=gallery)


def load_face_data(config: FacesConfig, data_dir: Path, celeba: Path | None, bin_dir: Path | None,
                   work_dir: Path) -> FaceData:
    """Split identities into pre-training / test sets and collect the verification pair sets.

    Yale B comes from ``data_dir/yaleb_cropped.npz``; CelebA from ``celeba`` (identity file and
    ``img_align_celeba``). With ``config.orl_pairs``, ORL (``data_dir/orl_faces.npz``) is turned
    into ``work_dir/orl.bin`` by the writer and read back through the restricted reader; every
    ``*.bin`` of ``bin_dir`` is added under its file name (``lfw``, ``cfp_fp``, ...).
    """
    checksums, gallery = {}, None
    if config.data == "yaleb":
        path = data_dir / "yaleb_cropped.npz"
        pretrain, test = load_yaleb_split(path, config, config.size)
        gallery = yaleb_frontal(path, config)
        checksums[path.name] = file_sha256(path)
    elif config.data == "celeba":
        if celeba is None:
            raise ValueError(f"config {config.name} needs --celeba ROOT (identity_CelebA.txt, img_align_celeba/)")
        annotations = load_celeba_identities(celeba)
        split = split_identities(annotations.identities, config.min_images, config.num_test, config.split_seed)
        pretrain, test = (annotations.load_images(np.flatnonzero(np.isin(annotations.identities, ids)), config.size)
                          for ids in (split.pretrain, split.test))
        checksums[CELEBA_IDENTITY_FILE] = file_sha256(find_in_layout(celeba, CELEBA_IDENTITY_FILE, ("", "Anno")))
    else:
        raise ValueError(f"unknown data {config.data!r}")
    bins = sorted(bin_dir.glob("*.bin")) if bin_dir is not None else []
    if config.orl_pairs:
        orl_path = data_dir / "orl_faces.npz"
        checksums[orl_path.name] = file_sha256(orl_path)
        bins.append(write_orl_bin(orl_path, work_dir / "orl.bin", config.orl_pairs, config.split_seed))
    verification = {}
    for path in bins:
        pairs = read_bin(path)
        checksums[path.name] = file_sha256(path)
        verification[pairs.name] = (pairs, pairs.decode(config.size, config.channels))
    return FaceData(pretrain, test, verification, checksums, gallery)


def load_yaleb_split(path: Path, config: FacesConfig, size: int | None) -> tuple[ImageTensorDataset,
                                                                                   ImageTensorDataset]:
    """Yale B's pre-training and test identities under ``config``'s split, fitted to ``size``
    (None: the native 168x192 images, as ``benchmarks.protect_effect`` writes them to photos)."""
    faces = load_npz_faces(path, size=size, channels=config.channels)
    split = split_identities(faces.labels, config.min_images, config.num_test, config.split_seed)
    return select_identities(faces, split.pretrain), select_identities(faces, split.test)


def yaleb_frontal(path: Path, config: FacesConfig, part: str = "test") -> torch.Tensor:
    """Which of the split's ``part`` ("test" or "pretrain") images, in :func:`load_yaleb_split`'s
    order, are lit within Yale B's subset-1 angle (the test ones are the cross-lighting gallery);
    needs the bundle's ``files`` array."""
    if part not in ("test", "pretrain"):
        raise ValueError(f"part must be 'test' or 'pretrain', got {part!r}")
    with np.load(path, allow_pickle=False) as data:
        if "files" not in data.files:
            raise ValueError(f"{path} lacks the files array that names each image's lighting")
        labels, files = data["labels"], data["files"]
    split = split_identities(labels, config.min_images, config.num_test, config.split_seed)
    angles = yaleb_light_angles(files[np.isin(labels, split.test if part == "test" else split.pretrain)])
    return torch.from_numpy(angles <= YALEB_SUBSET_DEGREES[0])


def load_photo_faces(root: Path, files: list[str], labels: torch.Tensor, classes: list[str],
                     config: FacesConfig) -> ImageTensorDataset:
    """Face photos ``root/<file>`` as the benchmark prepares Yale B: decoded, fitted to
    ``config.size`` (Pillow bicubic, centre square, as :func:`load_npz_faces`), ``config.channels``
    channels (a gray photo decodes to three equal ones). What a scraper's training set holds."""
    arrays = [decode_image(name, root / name, config.size)[..., :config.channels] for name in files]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageTensorDataset(images, labels, classes)


def restrict_identities(data: FaceData, count: int) -> FaceData:
    """Only the first ``count`` pre-training and test identities (quick smoke runs)."""
    if count < 2:
        raise ValueError(f"--identities must be at least 2, got {count}")
    gallery = None if data.test_gallery is None else data.test_gallery[data.test.labels < count]
    return dataclasses.replace(data, pretrain=select_identities(data.pretrain, range(count)),
                               test=select_identities(data.test, range(count)), test_gallery=gallery)


def write_orl_bin(npz: Path, out: Path, pairs_per_kind: int, seed: int) -> Path:
    """ORL as an insightface ``.bin``: ``pairs_per_kind`` genuine and as many impostor pairs,
    interleaved (genuine, impostor, ...) so every one of the 10 folds holds both kinds."""
    with np.load(npz, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    chosen = sample_pairs(labels, pairs_per_kind, pairs_per_kind, seed=seed)
    genuine, impostor = chosen[:pairs_per_kind], chosen[pairs_per_kind:]
    ordered = [pair for both in zip(genuine, impostor) for pair in both]
    return write_bin(out, [(images[i], images[j], same) for i, j, same in ordered])


def build_face_model(config: FacesConfig, name: str, width: float, classes: int, seed: int) -> MarginClassifier:
    """A freshly initialised (seeded) IR-ResNet backbone under a CosFace head."""
    torch.manual_seed(seed)
    backbone = create_model(name, width=width, in_channels=config.channels, input_size=config.size,
                            num_classes=config.embedding)
    return MarginClassifier(backbone, create_head("cosface", config.embedding, classes, s=config.head_s,
                                                  m=config.head_m))


def train_face_model(model: nn.Module, data: ImageTensorDataset, config: FacesConfig, epochs: int, seed: int,
                     device: torch.device) -> float:
    """Train with CosFace cross entropy (SGD, flip augmentation); returns the last training accuracy."""
    recipe = TrainConfig(epochs=epochs, batch_size=config.batch_size, lr=config.lr, schedule=config.schedule,
                         augment="flip", seed=seed)
    history = train_classifier(model, data, recipe, device=device, progress=False,
                               loss_fn=margin_cross_entropy_loss)
    return float(history[-1]["train_acc"])


def alignment_target(surrogate: nn.Module, data: ImageTensorDataset, config: FacesConfig) -> list[torch.Tensor]:
    """The paper's target gradient T: the reverse cross-entropy gradient of the (eval-mode)
    surrogate over the clean images ``data``."""
    return target_gradient(surrogate, data, loss_fn=make_loss("rce", label_in_forward=config.margin_losses),
                           batch_size=config.eval_batch)


def craft(config: FacesConfig, method: str, surrogate: nn.Module, target: list[torch.Tensor] | None,
          data: ImageTensorDataset, eps: int, seed: int) -> tuple[ImageTensorDataset, dict]:
    """The protected copy of ``data`` (uint8, ``max|Δ| <= eps`` exactly) and crafting statistics.

    ``method`` is any method label of the registry: "random" (±ε noise), "alignment-joint" /
    "alignment-independent", "adversarial" (toward the next identity), "error-minimizing" /
    "error-minimizing-classwise" (one Δ per identity), with ``config.method_settings``. Images are
    crafted in batches of ``config.craft_batch`` over a seeded permutation (the joint variant's
    cosine is over a batch, so batches mix identities as a shuffled training batch does); methods
    that need the whole corpus get it in one call.
    """
    fields = {"steps": config.steps, "restarts": config.restarts, **config.method_settings.get(method, {})}
    settings = CraftSettings.from_label(method, eps=eps, augment=config.craft_augment, backend=config.backend,
                                        seed=seed, **fields)
    method_class = METHODS.get(settings.method)
    corpus = getattr(method_class, "corpus", False)
    needs = {} if corpus else {"loss_fn": make_loss("ce", label_in_forward=config.margin_losses)}
    if method_class.takes_classes:
        needs["classes"] = len(data.classes)
    attack = build_attack(surrogate, settings, target, **needs)
    protected = data.images.clone()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    losses, start = [], time.perf_counter()
    for number, batch in enumerate([order] if corpus else order.split(config.craft_batch)):
        clean = data.images[batch].float() / 255
        crafted = attack(clean, data.labels[batch], seed=seed * 100_003 + number)
        protected[batch] = quantize_within(crafted, clean, eps).cpu()
        if attack.report.best_loss is not None:
            losses.append(float(attack.report.best_loss.float().mean()) * len(batch))
    stats = {"craft_seconds": round(time.perf_counter() - start, 1)}
    if losses:
        stats["alignment_loss" if settings.method == "alignment" else "craft_loss"] = round(sum(losses) / len(data), 4)
    return ImageTensorDataset(protected, data.labels, data.classes), stats


CROSS_LIGHT_KS = (1, 5)


def cross_light_measurable(data: FaceData) -> bool:
    """Whether the test images have a cross-lighting gallery of at least 5 images and a probe of a
    gallery identity (runs restricted to a few images per person may have neither)."""
    gallery = data.test_gallery
    if gallery is None or int(gallery.sum()) < max(CROSS_LIGHT_KS):
        return False
    return bool(torch.isin(data.test.labels[~gallery], data.test.labels[gallery]).any())


def reported_metrics(data: FaceData) -> list[str]:
    """The per-row metrics the face reports show: top1, top5, cross_light_top1 where measurable,
    then one accuracy per verification set."""
    return ["top1", "top5", *(["cross_light_top1"] if cross_light_measurable(data) else []), *data.verification]


def evaluate_embedding(backbone: nn.Module, data: FaceData, config: FacesConfig,
                       device: torch.device | None = None) -> dict[str, float]:
    """kNN identification on the test identities (top1, top5; leave-one-out), the cross-lighting
    identification where the data has a gallery (cross_light_top1, cross_light_top5), and every
    verification set (accuracy, AUC, TAR@FAR=1e-3) of ``backbone``'s embeddings."""
    embeddings = extract_embeddings(backbone, data.test, batch_size=config.eval_batch, device=device)
    metrics = knn_identification(embeddings, data.test.labels).metrics()
    if cross_light_measurable(data):
        cross = gallery_identification(embeddings, data.test.labels, data.test_gallery, ks=CROSS_LIGHT_KS)
        metrics.update({f"cross_light_{name}": value for name, value in cross.metrics().items()})
    for name, (pairs, images) in data.verification.items():
        result = evaluate_pair_set(backbone, pairs, config.size, config.channels, flip=config.flip_fusion,
                                   batch_size=config.eval_batch, device=device, images=images)
        metrics.update(result.metrics(name))
    return metrics


def evaluate_victim(victim: MarginClassifier, data: FaceData, config: FacesConfig) -> dict[str, float]:
    """:func:`evaluate_embedding` of the victim's backbone, plus its accuracy on the clean
    pre-training images."""
    metrics = evaluate_embedding(victim.backbone, data, config)
    metrics["clean_train_acc"] = round(evaluate_accuracy(victim, data.pretrain, config.eval_batch), 4)
    return metrics


def reference_runs(config: FacesConfig, data: FaceData, seed: int) -> list[dict]:
    """What the headline metrics give without learning anything: the raw pixels as embeddings
    (``pixels``), the victim's backbone at its seed's initialisation (``untrained``), and the same
    initialisation with its BatchNorm statistics estimated on the clean pre-training images
    (``untrained-bn``: no weight learned, but normalised for faces, as any network trained on
    images near these is). A poison that leaves the victim no better than ``untrained-bn`` has
    taken everything the weights learned."""
    classes = len(data.pretrain.classes)
    untrained = build_face_model(config, config.victim, config.victim_width, classes, 1000 + seed).backbone
    calibrated = copy.deepcopy(untrained)
    update_bn(DataLoader(data.pretrain, batch_size=config.batch_size), calibrated)
    rows = []
    for method, backbone in (("pixels", nn.Flatten()), ("untrained", untrained), ("untrained-bn", calibrated)):
        metrics = evaluate_embedding(backbone, data, config, device=torch.device("cpu"))
        rows.append({"method": method, "eps": 0, "victim": config.victim, "defense": "none", "seed": seed, **metrics})
    return rows


def run_seed(config: FacesConfig, data: FaceData, seed: int, device: torch.device, headline_only: bool,
             log=print) -> list[dict]:
    """One seed of the benchmark: surrogate, target gradient, every protected set, one victim each.

    Victims of one seed share their initialisation and data order (seed ``1000 + seed``), so rows
    differ only in the training images. Returns one run dict per row (results-file keys).
    """
    unknown = [d for d in config.defenses if d not in DATA_DEFENSES]
    if unknown:
        raise ValueError(f"the face benchmark runs data defenses only ({', '.join(DATA_DEFENSES)}); got {unknown}")
    classes = len(data.pretrain.classes)
    surrogate = build_face_model(config, config.surrogate, config.surrogate_width, classes, seed)
    surrogate_acc = train_face_model(surrogate, data.pretrain, config, config.surrogate_epochs, seed, device)
    target = alignment_target(surrogate.eval(), data.pretrain, config)
    log(f"seed {seed}: surrogate {config.surrogate} trained (train acc {surrogate_acc:.1f} %)")
    jobs = [("clean", 0)] + [(f"alignment-{variant}", eps) for variant in config.variants for eps in config.eps]
    jobs += [("random", eps) for eps in config.random_eps]
    jobs += [(method, eps) for method in config.methods for eps in config.method_eps]
    if headline_only:
        headline = ("alignment-joint", "random")
        jobs = [(m, e) for m, e in jobs if m == "clean" or (e == config.headline_eps and m in headline)]
    runs = reference_runs(config, data, seed)
    for method, eps in jobs:
        crafted, stats = (data.pretrain, {}) if method == "clean" else craft(
            config, method, surrogate, target, data.pretrain, eps, seed)
        for defense in ("none", *(() if headline_only else config.defenses)):
            train_set = apply_data_defense(crafted, defense, eps or config.headline_eps)
            victim = build_face_model(config, config.victim, config.victim_width, classes, 1000 + seed)
            accuracy = train_face_model(victim, train_set, config, config.victim_epochs, 1000 + seed, device)
            run = {"method": method, "eps": eps, "victim": config.victim, "defense": defense, "seed": seed,
                   **evaluate_victim(victim, data, config), **stats, "victim_train_acc": round(accuracy, 4)}
            log(f"seed {seed} {method} eps {eps} defense {defense}: "
                + ", ".join(f"{k} {v}" for k, v in run.items() if isinstance(v, float)))
            runs.append(run)
    return runs
