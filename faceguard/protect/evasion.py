"""Evasion through the photo: what ``faceguard protect --method evade`` crafts and measures.

The perturbation lives where alignment's does (δ on the profile's crop grid, pasted into the photo
by the inverse warp, only inside the face's paste mask: :mod:`faceguard.protect.warp`), but the
objective reads the *perturbed photo region* through every recognizer of the crafting ensemble
(``CraftSettings.ensemble``), each with its own view of the face:

    δ --paste--> photo region + Δ (8-bit) --[scraper EOT]--> profile crop --> profile backbone
                                                          \\-> dlib chip    --> dlib-resnet
                                                          \\-> 112² crop    --> sface, ...

and :class:`faceguard.attacks.Evade` minimises the mean cosine between each view's embedding and
the face's clean embedding in that recognizer. A view is a similarity warp of the photo fixed by
the face's MTCNN points (:class:`ViewGeometry`): the ArcFace crop at the recognizer's size, or
dlib's ``get_face_chip`` geometry estimated from MTCNN's points
(:func:`recognition.face_chip.chip_to_image`). Crafting warps bilinearly and differentiably; what
is measured on the saved file cuts each view as a scraper would (OpenCV's crop, dlib's exact chip
extraction).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import Tensor, nn

from faceguard.attacks import build_attack
from faceguard.attacks.evasion import anchor_similarity, embeddings_of
from faceguard.protect.warp import FaceRegion, PhotoFaces, as_channels_first, as_rgb, crop_corners, rgb_view
from faceguard.settings import CraftSettings
from recognition.alignment import align_face, estimate_similarity
from recognition.face_chip import CHIP_SIZE, MTCNN_TEMPLATE, chip_to_image, mtcnn_face_chip


@dataclass(frozen=True)
class ViewGeometry:
    """How one recognizer sees a face of a photo: a ``size`` x ``size`` view whose pixels map to
    photo pixels by ``to_photo(landmarks)`` (2x3), and ``cut(pixels, landmarks)``, the uint8 view
    a scraper cuts from saved pixels (HxW or HxWx3)."""

    size: int
    to_photo: Callable[[np.ndarray], np.ndarray]
    cut: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def corners(self, landmarks: np.ndarray) -> np.ndarray:
        """The photo points (4, 2) at the view's corners."""
        return crop_corners(self.size, self.to_photo(landmarks))

    def from_region(self, landmarks: np.ndarray, region: FaceRegion) -> Tensor:
        """2x3 map from the face region's pixels to the view's pixels (float32)."""
        forward = np.vstack([self.to_photo(landmarks), [0, 0, 1]])  # view -> photo
        forward[:2, 2] -= region.box[:2]  # view -> region
        return torch.from_numpy(np.linalg.inv(forward)[:2]).float()


def arcface_view(size: int) -> ViewGeometry:
    """The ArcFace-aligned crop of ``size`` (:func:`recognition.alignment.align_face`)."""
    return ViewGeometry(size, lambda points: cv2.invertAffineTransform(estimate_similarity(points, size)),
                        lambda pixels, points: align_face(pixels, points, size).crop)


DLIB_VIEW = ViewGeometry(CHIP_SIZE, lambda points: chip_to_image(points, MTCNN_TEMPLATE),
                         lambda pixels, points: mtcnn_face_chip(rgb_view(pixels), points))


@dataclass(frozen=True)
class Member:
    """One recognizer of the crafting ensemble: its name, network ([0, 1] RGB NCHW view → [N, D])
    and view geometry."""

    name: str
    network: nn.Module
    view: ViewGeometry


def profile_member(profile, device: torch.device) -> Member:
    """The protection profile's backbone on its own ArcFace crop."""
    return Member("profile", profile.backbone, arcface_view(profile.input_size))


def dlib_member(profile, device: torch.device) -> Member:
    """dlib-resnet on dlib's chip (estimated from MTCNN's points)."""
    from recognition.models import create_model

    return Member("dlib-resnet", create_model("dlib-resnet").to(device).eval(), DLIB_VIEW)


def _onnx_member(name: str) -> Callable[[object, torch.device], Member]:
    def load(profile, device: torch.device) -> Member:
        from recognition.models import create_model
        from recognition.models.onnx_recognizers import INPUT_SIZE

        return Member(name, create_model(name).to(device).eval(), arcface_view(INPUT_SIZE))

    load.__doc__ = f"{name} on the 112 x 112 ArcFace crop."
    return load


sface_member = _onnx_member("sface")
insightface_mbf_member = _onnx_member("insightface-mbf")


def load_ensemble(names: Sequence[str], profile, device: torch.device) -> list[Member]:
    """The members named (:data:`faceguard.registry.ENSEMBLE`), in that order, on ``device``; a
    member whose weights do not allow any use prints a one-line warning (once per process)."""
    from faceguard.registry import ENSEMBLE
    from recognition.models.licences import warn_if_restricted

    warn_if_restricted(names)
    return [ENSEMBLE.get(name)(profile, device) for name in names]


class PhotoViews(nn.Module):
    """Every ensemble member's view of the faces of one photo, from perturbed photo regions.

    ``forward(regions)`` takes the regions of all the photo's faces in face order (what
    :meth:`PhotoFaces.perturbed_regions` gives for index 0..n-1) and returns one [n, D] embedding
    tensor per member, in ensemble order. ``to_views[m]`` holds member m's [n, 2, 3] maps from
    each face's region to its view (:meth:`ViewGeometry.from_region`).
    """

    def __init__(self, members: Sequence[Member], to_views: Sequence[Tensor]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(member.network for member in members)
        self.sizes = [member.view.size for member in members]
        for k, matrices in enumerate(to_views):
            self.register_buffer(f"to_view{k}", matrices)
        self.faces = len(to_views[0])

    def forward(self, regions: Tensor) -> list[Tensor]:
        return [self.member(k, regions) for k in range(len(self.networks))]

    def member(self, k: int, regions: Tensor) -> Tensor:
        """Member ``k``'s [n, D] embeddings of the faces' regions (one entry of :meth:`forward`)."""
        if len(regions) != self.faces:
            raise ValueError(f"expected the regions of all {self.faces} faces, got {len(regions)}")
        size = self.sizes[k]
        view = warp_affine(regions, getattr(self, f"to_view{k}"), (size, size), padding_mode="border")
        return self.networks[k](as_rgb(view))


def photo_views(members: Sequence[Member], landmarks: Sequence[np.ndarray], regions: Sequence[FaceRegion],
                device: torch.device, to_work: Tensor | None = None) -> PhotoViews:
    """:class:`PhotoViews` of one photo's faces (their landmarks and regions, in face order), read
    from regions at a work scale when ``to_work`` ([n, 3, 3], :attr:`PhotoFaces.to_work`) is given."""
    from_work = None if to_work is None else torch.linalg.inv(to_work.detach().cpu().float())
    to_views = []
    for member in members:
        matrices = torch.stack([member.view.from_region(points, region) for points, region in zip(landmarks, regions)])
        to_views.append(matrices if from_work is None else matrices @ from_work)
    return PhotoViews(members, [t.to(device) for t in to_views]).eval()


# Work pixels per pixel of the finest view. Crafting reads the regions area-downscaled to this
# resolution (the scraper augmentation and the warps of every step run on them), and the saved Δ is
# its smooth upsampling. 1.0 instead of session 13's 1.5 crafted a step about 10 % faster and, over
# three crafting seeds, transferred better to EdgeFace-S (a recognizer crafting never sees) with the
# same looks and white-box effect (benchmarks/results/recognizers-s17-seeds.md).
OVERSAMPLING = 1.0


def work_scale(members: Sequence[Member], landmarks: Sequence[np.ndarray], oversampling: float = OVERSAMPLING) -> float:
    """The scale at which a photo's regions are crafted: ``oversampling`` work pixels per pixel of
    the finest view of any face (1 when the photo is not that much larger). Views of large faces
    read a fraction of the photo's pixels, so crafting at full resolution only costs time."""
    finest = min(float(np.hypot(*member.view.to_photo(points)[:, 0])) for member in members for points in landmarks)
    return min(1.0, oversampling / finest)


@torch.no_grad()
def saved_views(pixels: np.ndarray, landmarks: list[np.ndarray], members: Sequence[Member],
                device: torch.device) -> list[Tensor]:
    """Unit embeddings per member of faces as a scraper gets them from saved uint8 pixels (HxW or
    HxWx3), each view cut as the recognizer's own pipeline cuts it from the given landmarks."""
    out = []
    for member in members:
        views = torch.stack([as_channels_first(member.view.cut(pixels, points)) for points in landmarks])
        out.append(F.normalize(member.network(as_rgb(views.to(device))), dim=1))
    return out


@dataclass(eq=False)
class EvasionCraft:
    """What :func:`craft_evasion` made for one photo's faces: the perturbed crop-grid ``z``, the
    per-face losses (the clean faces' then the crafted ones'), each member's ``anchors`` the loss
    reads (clean embeddings or target centres), the target person per face ("" when untargeted)
    and the sign of the cosine to the anchors in the loss."""

    z: Tensor
    losses: Tensor
    anchors: list[Tensor]
    targets: list[str]
    sign: float


def craft_evasion(members: Sequence[Member], settings: CraftSettings, model: PhotoFaces,
                  landmarks: Sequence[np.ndarray], regions: Sequence[FaceRegion], device: torch.device,
                  choose: Callable[[list[Tensor]], tuple[list[Tensor], list[str]]] | None = None) -> EvasionCraft:
    """Craft ``settings.method`` (evade, or target when ``choose`` picks target centres from the
    clean embeddings: :meth:`faceguard.protect.targets.TargetSet.choose`) for every face of one
    photo through the members' views of its perturbed regions."""
    index = torch.arange(len(regions), device=device)
    z_clean = model.clean_crops
    views = photo_views(members, landmarks, regions, device, model.to_work)
    with torch.no_grad():
        anchors = clean = embeddings_of(views, model.perturbed_regions(z_clean, index))
    targets = [""] * len(regions)
    if choose is not None:
        anchors, targets = choose(clean)
    attack = build_attack(views, settings, anchors, preprocess=model.perturbed_regions)
    z = attack(z_clean, index)
    # The losses without more passes: the clean one from the clean embeddings (a regulariser is 0
    # at Δ = 0), the crafted one as the attack selected its restart.
    losses = torch.cat([attack.sign * anchor_similarity(clean, attack.anchors, index), attack.report.best_loss])
    return EvasionCraft(z, losses, anchors, targets, attack.sign)
