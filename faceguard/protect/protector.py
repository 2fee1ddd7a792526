"""``Protector``: protect every face of one photo at a time (the paper's online setting).

``Protector(profile, eps=16).protect(image)`` detects the faces (MTCNN), aligns each to the
profile's crop size, crafts the alignment perturbation through the photo warp
(:mod:`faceguard.protect.warp`) and returns the protected photo at full resolution with per-face
numbers: the alignment loss A = 1 − cos(T, ∇θ CE) of the clean face, of the crafted face and of
the face a scraper gets from the 8-bit result by re-detecting and re-aligning it.

``method="evade"`` crafts evasion instead (:mod:`faceguard.protect.evasion`): the perturbation
lives on the same crop grid and is pasted the same way, but moves each face's embeddings in every
recognizer of ``settings.ensemble`` away from its clean ones, through what a scraper does to the
photo when ``augment="scraper"``. ``method="target"`` pulls each face toward the farthest of
a set of other people instead (:mod:`faceguard.protect.targets`; :meth:`Protector.load_targets`).
``method="adversarial"`` crafts the class-targeted poison on the
profile's classifier instead: each face toward the head row after its own identity's.
``method="error-minimizing-classwise"`` pastes one perturbation per person, learned beforehand over
all of a folder's faces (:meth:`Protector.learn_identity_noise`,
:mod:`faceguard.protect.identity_noise`); ``faceguard protect`` on a folder does that first.
``method="synthetic"`` pastes one block pattern per person the same way, drawn rather than learned.

Pre-cropped faces (``aligned=True``, ``faceguard protect --aligned``): no detection; each whole
image is one face whose crop is ``ImageOps.fit`` to the profile's size, as ``faceguard fit
--aligned`` and the face benchmarks prepare such images (:func:`faceguard.protect.warp.fit_region`),
and the saved file is measured by fitting it again.

Identities: the surrogate's head has rows for the profile's own identities. A face of anyone else
gets a row from its identity's mean normalised embedding (CosFace rows are class centres): pass
``identity=`` (a profile class name, or a name registered with :meth:`Protector.add_identity`);
without one each face is its own centre. Outputs keep |protected − original| ≤ ε per pixel and
channel exactly (``quantize_within``) and every pixel outside the faces' paste masks unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from faceguard.attacks import AdversarialPoison, Alignment, Target
from faceguard.attacks.evasion import anchor_similarity
from faceguard.gradients import per_sample_alignment
from faceguard.profile.store import Profile, load_profile
from faceguard.protect.evasion import craft_evasion, load_ensemble, saved_views, work_scale
from faceguard.protect.identity_noise import IdentityNoise, learn_identity_noise
from faceguard.protect.photo import colour_and_alpha
from faceguard.protect.targets import TargetSet, load_targets
from faceguard.protect.warp import (FaceRegion, PhotoFaces, as_channels_first, as_rgb, crop_loss, face_region,
                                    fit_box, fit_crop, fit_region, rgb_view)
from faceguard.quantize import quantize_within
from faceguard.registry import EVASION_METHODS
from faceguard.settings import (DEFAULT_PROTECT_METHOD, PROTECT_CLASSIFIER_METHODS, PROTECT_CORPUS_METHODS,
                                PROTECT_METHODS, CraftSettings, protect_settings)
from recognition.alignment import align_face, template
from recognition.detection import Face, FaceDetector
from recognition.device import resolve_device
from recognition.heads import CosFace

REDETECT_MARGIN = 0.75  # re-detect in the face box grown by this fraction of its side on every edge
REDETECT_MIN_SIZE = 0.5  # ... looking only for faces at least this fraction of its side (MTCNN's pyramid)
MIN_FACE = 20  # MTCNN's default smallest face (pixels)


@dataclass
class FaceResult:
    """One protected face: detection, identity used, and the method's loss (lower = stronger):
    alignment's A = 1 − cos(T, ∇θ CE), for evasion the mean cosine between each recognizer's
    embedding of the face and of its clean self (``target``: minus the mean cosine to the target
    person's centre, named in ``target``), for the class-targeted poison (``adversarial``) the CE
    toward the head row after the face's own.

    ``loss_saved`` is measured on the face re-detected and re-aligned from the 8-bit output
    (None when re-detection missed it).
    """

    box: list[float]
    score: float
    identity: str
    loss_clean: float
    loss_crafted: float
    loss_saved: float | None = None
    target: str = ""


@dataclass(eq=False)
class Crafted:
    """What :meth:`Protector.protect_pixels` made: new pixels, per-face results, and the surrogate
    view of the photo's faces (head and labels) that :meth:`Protector.measure_saved` reuses; for
    evasion also each recognizer's anchors of the faces (``anchors``: clean embeddings, or target
    centres) and the sign of the cosine to them in the loss."""

    pixels: np.ndarray
    faces: list[FaceResult]
    model: PhotoFaces | None = None
    anchors: list[torch.Tensor] | None = None
    sign: float = 1.0


@dataclass
class ProtectResult:
    """The protected photo (same type, mode and size as the input) and its faces."""

    image: Image.Image | np.ndarray
    faces: list[FaceResult] = field(default_factory=list)


class Protector:
    """Craft protection (alignment, evasion, the class-targeted poison or per-person
    error-minimizing noise) for the faces of photos with one profile.

    ``settings`` is a :class:`~faceguard.settings.CraftSettings`; keyword ``changes`` override
    fields of it, e.g. ``Protector(eps=8, steps=20)``. Without ``settings`` they override
    :func:`~faceguard.settings.protect_settings` of the method chosen (ε = 16 pixel levels, 1
    restart, the ``fd-frozen`` backend, the method's steps and augmentation), so
    ``Protector(method="alignment")`` gets alignment's defaults. The method defaults to
    :data:`~faceguard.settings.DEFAULT_PROTECT_METHOD` (evade), and to alignment for pre-cropped
    faces (``aligned``), which evasion does not handle. Every photo is crafted on its own (the online setting: uploads can be protected
    one at a time). ``variant="joint"`` (default) gives the faces of a photo one exact cosine
    objective (for a one-face photo: that face's own cosine); ``"independent"`` detaches each
    face's gradient norm (weaker here: docs/methods.md). ``aligned``: every image is one
    pre-cropped face (no detection; see the module doc).
    """

    def __init__(self, profile: Profile | str | Path | None = None, settings: CraftSettings | None = None, *,
                 device: str = "auto", detector: FaceDetector | None = None, aligned: bool = False,
                 **changes: object) -> None:
        if settings is None:
            changes.setdefault("method", Alignment.name if aligned else DEFAULT_PROTECT_METHOD)
            settings = protect_settings(**changes)
        else:
            settings = settings.replace(**changes)
        if settings.method not in PROTECT_METHODS:
            raise ValueError(f"protect crafts with one of {', '.join(PROTECT_METHODS)}; got method {settings.method!r}")
        if aligned and settings.method not in PROTECT_CLASSIFIER_METHODS:
            raise ValueError(f"pre-cropped faces (aligned) are protected with {' or '.join(PROTECT_CLASSIFIER_METHODS)}")
        self.settings = settings
        self.eps = settings.eps
        self.device = resolve_device(device)
        if not isinstance(profile, Profile):
            profile = load_profile(profile, self.device)
        self.profile = profile.to(self.device)
        self.aligned = aligned
        self.detector = None if aligned else detector or FaceDetector(device=self.device)
        self.centres: dict[str, torch.Tensor] = {}
        self.identity_noise: IdentityNoise | None = None
        self.targets: TargetSet | None = None
        evasion = settings.method in EVASION_METHODS
        self.ensemble = load_ensemble(settings.ensemble, self.profile, self.device) if evasion else []

    # ----- identities -----
    @property
    def corpus(self) -> bool:
        """Whether the method is learned over a whole folder first (:meth:`learn_identity_noise`)."""
        return self.settings.method in PROTECT_CORPUS_METHODS

    def clean_crops(self, colour: np.ndarray, faces: list[Face]) -> torch.Tensor:
        """The faces' clean aligned crops [N, C, S, S] in [0, 1] (C = the photo's 1 or 3 colour
        channels), on the device."""
        return torch.stack([as_channels_first(self._crop(colour, f)) for f in faces]).to(self.device)

    def embed(self, colour: np.ndarray, faces: list[Face]) -> torch.Tensor:
        """Normalised surrogate embeddings [N, D] of the faces' clean aligned crops (CPU)."""
        with torch.no_grad():
            embedding = self.profile.backbone(as_rgb(self.clean_crops(colour, faces)))
        return F.normalize(embedding, dim=1).cpu()

    def embed_pixels(self, pixels: np.ndarray, faces: list[Face]) -> torch.Tensor:
        """:meth:`embed` for uint8 pixels of any kept mode; [0, D] when there is no face."""
        if not faces:
            return torch.zeros(0, self.profile.head.weight.shape[1])
        return self.embed(colour_and_alpha(pixels)[0], faces)

    def _crop(self, colour: np.ndarray, face: Face) -> np.ndarray:
        """The clean aligned crop of one face (the fitted whole image when ``aligned``)."""
        size = self.profile.input_size
        return fit_crop(colour, size) if self.aligned else align_face(colour, face.landmarks, size).crop

    def _region(self, colour: np.ndarray, face: Face) -> FaceRegion:
        """Where one face's perturbation lives (see :mod:`faceguard.protect.warp`); for evasion the
        region also holds every ensemble member's view of the face, and its crop grid is
        ``settings.grid`` when that is set (the members read the region, not the grid)."""
        size = self.profile.input_size
        if self.ensemble and self.settings.grid:
            size = self.settings.grid
        if self.aligned:
            return fit_region(colour, size)
        cover = [member.view.corners(face.landmarks) for member in self.ensemble]
        return face_region(colour, face.landmarks, size, np.concatenate(cover) if cover else None)

    def learn_identity_noise(self, crops: torch.Tensor, names: list[str]) -> IdentityNoise:
        """Learn (and keep) the per-person noise (class-wise error-minimizing, or synthetic patterns)
        for the named people from the clean crops [N, C, S, S] of all their faces
        (:meth:`clean_crops`; gray when C = 1); needs a corpus method."""
        if not self.corpus:
            raise ValueError(f"identity noise belongs to {', '.join(PROTECT_CORPUS_METHODS)}, not {self.settings.method}")
        self.identity_noise = learn_identity_noise(self.profile.backbone, crops.to(self.device), names, self.settings)
        return self.identity_noise

    def load_targets(self, folder: str | Path) -> TargetSet:
        """Read (and keep) the target people of ``folder`` (``DIR/<person>/<photos>``) for
        ``method="target"`` (:func:`faceguard.protect.targets.load_targets`)."""
        if self.settings.method != Target.name:
            raise ValueError(f"target identities belong to the target method, not {self.settings.method}")
        self.targets = load_targets(folder, self)
        return self.targets

    def add_identity(self, name: str, embeddings: torch.Tensor) -> None:
        """Register (or replace) a person by embeddings of their faces: the head row is their mean."""
        self.centres[name] = F.normalize(embeddings.float().mean(0), dim=0)

    def _head(self, identities: list[str | None], embeddings: torch.Tensor) -> tuple[CosFace, torch.Tensor]:
        """The profile's CosFace head with a row appended per new identity, and each face's label."""
        classes = {name: i for i, name in enumerate(self.profile.classes)}
        rows, labels, new = [self.profile.head.weight.detach()], [], {}
        for k, name in enumerate(identities):
            if name in classes:
                labels.append(classes[name])
                continue
            key = name if name is not None else f"\0face{k}"
            if key not in new:
                centre = self.centres.get(name) if name is not None else None
                new[key] = len(classes) + len(new)
                rows.append((embeddings[k] if centre is None else centre)[None].to(self.device))
            labels.append(new[key])
        template = self.profile.head
        head = CosFace(template.weight.shape[1], len(classes) + len(new), s=template.s, m=template.m)
        head.weight.data = F.normalize(torch.cat(rows).float(), dim=1)
        return head.to(self.device).eval(), torch.tensor(labels, device=self.device)

    # ----- protection -----
    def protect(self, image: Image.Image | np.ndarray, identity: str | None = None,
                measure: bool = True) -> ProtectResult:
        """Protect every face of one photo (PIL image or uint8 array; alpha kept, mode kept).

        PIL images in modes other than L, LA, RGB, RGBA are converted to RGB(A) first. With
        ``measure`` each face's loss after 8-bit rounding, re-detection and re-alignment is
        reported as ``loss_saved``.
        """
        is_pil = isinstance(image, Image.Image)
        if is_pil and image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8:
            raise ValueError(f"expected 8-bit pixels, got {pixels.dtype}")
        faces = self.detect(pixels)
        crafted = self.protect_pixels(pixels, faces, [identity] * len(faces))
        if measure and faces:
            self.measure_saved(crafted, crafted.pixels, faces)
        protected = crafted.pixels
        return ProtectResult(Image.fromarray(protected, mode=image.mode) if is_pil else protected, crafted.faces)

    def detect(self, pixels: np.ndarray) -> list[Face]:
        """MTCNN faces of uint8 pixels of any kept mode (L, LA, RGB, RGBA), best score first; when
        ``aligned``, the whole image as one face: box = the fitted square, landmarks = the crop
        template mapped back into the image, score 1."""
        colour, _ = colour_and_alpha(pixels)
        if not self.aligned:
            return self.detector.detect(rgb_view(colour))
        left, top, side = fit_box(colour.shape[1], colour.shape[0])
        size = self.profile.input_size
        points = (template(size) + 0.5) * (side / size) + np.array([left, top]) - 0.5
        box = np.array([left, top, left + side, top + side], dtype=np.float32)
        return [Face(box, 1.0, points.astype(np.float32))]

    def protect_pixels(self, pixels: np.ndarray, faces: list[Face], identities: list[str | None]
                       ) -> Crafted:
        """Perturb the given faces of uint8 pixels (identity names per face, None = own centre)."""
        if not faces:
            return Crafted(pixels.copy(), [])
        colour, alpha = colour_and_alpha(pixels)
        regions = [self._region(colour, face) for face in faces]
        budget = {"budget_floor": self.settings.budget_floor, "feather": self.settings.feather}
        if self.corpus:  # the noise's own classifier, each face labelled with its person's row
            if self.identity_noise is None:
                raise ValueError("no identity noise learned yet: faceguard protect learns it over the whole folder "
                                 "(Python: Protector.learn_identity_noise)")
            noise = self.identity_noise
            model = PhotoFaces(noise.model.backbone, noise.model.head, colour, regions, noise.rows(identities),
                               **budget).eval()
        else:
            head, labels = self._head(identities, self.embed(colour, faces))
            scale = work_scale(self.ensemble, [face.landmarks for face in faces]) if self.ensemble else 1.0
            model = PhotoFaces(self.profile.backbone, head, colour, regions, labels, work_scale=scale, **budget).eval()
        index = torch.arange(len(faces), device=self.device)
        anchors, targets, sign = None, [""] * len(faces), 1.0
        if not self.ensemble:
            z, losses = self._classify(model, model.clean_crops, index)
        else:
            if self.settings.method == Target.name and self.targets is None:
                raise ValueError("no target identities: faceguard protect --method target needs --targets DIR "
                                 "(Python: Protector.load_targets)")
            choose = self.targets.choose if self.settings.method == Target.name else None
            craft = craft_evasion(self.ensemble, self.settings, model, [face.landmarks for face in faces], regions,
                                  self.device, choose)
            z, losses, anchors, targets, sign = craft.z, craft.losses, craft.anchors, craft.targets, craft.sign
        with torch.no_grad():
            deltas = model.saved_delta(z, index).cpu()
        clean_loss, crafted_loss = losses.split(len(faces))
        protected = self._apply(colour, regions, deltas)
        out = protected if alpha is None else np.concatenate(
            [protected.reshape(protected.shape[:2] + (-1,)), alpha[..., None]], axis=2)
        results = [FaceResult([round(float(v), 1) for v in face.box], round(face.score, 4),
                              identity or "", float(a), float(b), target=target)
                   for face, identity, a, b, target in zip(faces, identities, clean_loss.tolist(),
                                                           crafted_loss.tolist(), targets)]
        return Crafted(out, results, model, anchors, sign)

    def _classify(self, model: PhotoFaces, z_clean: torch.Tensor, index: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment or the class-targeted poison on the crop grid with the profile's classifier, or
        each face's person's identity noise (learned beforehand; ``model`` holds its classifier and
        rows): (perturbed z, per-face loss of the clean then the perturbed crops)."""
        if self.corpus:
            z = z_clean + self.identity_noise.deltas(model.labels[index], model.channels)
        else:
            if self.settings.method == AdversarialPoison.name:
                attack = AdversarialPoison(model, self.settings, target_of=model.next_class, preprocess=model.crops,
                                           loss_fn=PhotoFaces.class_loss)
            else:
                attack = Alignment(model, self.profile.target, self.settings, loss_fn=crop_loss,
                                   preprocess=model.crops, params=self.profile.target_params())
            z = attack(z_clean, index)
        with torch.no_grad():
            crops = torch.cat([model.crops(z_clean, index), model.crops(z, index)])
        return z, self._crop_losses(model, crops, index.repeat(2))

    def _crop_losses(self, model: PhotoFaces, crops: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The classifier method's per-face loss of aligned crops: alignment's A = 1 − cos(T, ∇θ CE),
        the class-targeted poison's CE toward the next head row, or for identity noise the CE of
        the classifier trained alongside it toward the face's own person (low: the shortcut is there)."""
        if self.corpus:
            with torch.no_grad():
                return model.crop_loss(crops, index)
        if self.settings.method == AdversarialPoison.name:
            with torch.no_grad():
                return model.class_loss(crops, model.next_class(index))
        return per_sample_alignment(model, self.profile.target_params(), crops, index, self.profile.target, crop_loss)

    def _apply(self, colour: np.ndarray, regions: list, deltas: torch.Tensor) -> np.ndarray:
        """Add each face's Δ to the photo, round within ε; pixels off every mask stay byte-identical.
        Only the box around every region is converted to float and back (photos are mostly larger)."""
        left, top = min(r.box[0] for r in regions), min(r.box[1] for r in regions)
        right, bottom = max(r.box[2] for r in regions), max(r.box[3] for r in regions)
        clean = as_channels_first(colour[top:bottom, left:right])
        perturbed = clean.clone()
        touched = torch.zeros(clean.shape[1:], dtype=torch.bool)
        for region, delta in zip(regions, deltas):
            x0, y0, x1, y1 = region.box
            h, w = y1 - y0, x1 - x0
            perturbed[:, y0 - top:y1 - top, x0 - left:x1 - left] += delta[:, :h, :w]
            touched[y0 - top:y1 - top, x0 - left:x1 - left] |= torch.from_numpy(region.mask)
        rounded = quantize_within(perturbed.clamp(0, 1), clean, self.eps)
        result = torch.where(touched, rounded, (clean * 255).round().to(torch.uint8)).permute(1, 2, 0).numpy()
        out = colour.copy()
        out[top:bottom, left:right] = result[..., 0] if colour.ndim == 2 else result
        return out

    def measure_saved(self, crafted: Crafted, saved: np.ndarray, faces: list[Face]) -> None:
        """Fill each ``crafted.faces[k].loss_saved``: re-detect face k near its box in the decoded
        ``saved`` pixels, re-align it as a scraper would (cv2; dlib's own chip extraction for
        dlib-resnet), evaluate the method's loss (alignment: A with the crafting head; evasion: the
        mean cosine to the clean embeddings, or minus that to the target's centres). When ``aligned`` the scraper's crop is the fitted
        saved image (nothing to re-detect)."""
        colour, _ = colour_and_alpha(np.asarray(saved))
        rgb = rgb_view(colour)
        model, results = crafted.model, crafted.faces
        found = [face.landmarks if self.aligned else self._redetect(rgb, face) for face in faces]
        kept = [k for k, points in enumerate(found) if points is not None]
        if not kept:
            return
        if crafted.anchors is not None:
            views = saved_views(colour, [found[k] for k in kept], self.ensemble, self.device)
            losses = crafted.sign * anchor_similarity(views, crafted.anchors, kept)
        else:
            crops = [as_channels_first(self._crop(colour, Face(faces[k].box, faces[k].score, found[k]))) for k in kept]
            losses = self._crop_losses(model, torch.stack(crops).to(self.device), torch.tensor(kept, device=self.device))
        for k, loss in zip(kept, losses.tolist()):
            results[k].loss_saved = float(loss)

    def _redetect(self, rgb: np.ndarray, face: Face) -> np.ndarray | None:
        """Landmarks [5, 2] of the face re-detected in a window around ``face.box`` (None if missed)."""
        x1, y1, x2, y2 = face.box
        grow = REDETECT_MARGIN * max(x2 - x1, y2 - y1)
        height, width = rgb.shape[:2]
        wx0, wy0 = int(max(x1 - grow, 0)), int(max(y1 - grow, 0))
        wx1, wy1 = int(min(x2 + grow, width)), int(min(y2 + grow, height))
        smallest = max(MIN_FACE, int(REDETECT_MIN_SIZE * min(x2 - x1, y2 - y1)))
        found = self.detector.detect(np.ascontiguousarray(rgb[wy0:wy1, wx0:wx1]), min_face_size=smallest)
        centre = np.array([(x1 + x2) / 2 - wx0, (y1 + y2) / 2 - wy0])
        best = min(found, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre), default=None)
        if best is None or np.linalg.norm((best.box[:2] + best.box[2:]) / 2 - centre) > (x2 - x1) / 2:
            return None
        return best.landmarks + np.array([wx0, wy0], dtype=np.float32)
