"""Evasion through the photo: what ``faceguard protect --method evade`` crafts and measures.

The perturbation lives where alignment's does (δ on the profile's crop grid, pasted into the photo
by the inverse warp, only inside the face's paste mask: :mod:`faceguard.protect.warp`), but the
objective reads the *perturbed photo region* through every recognizer's own view of the face:

    δ --paste--> photo region + Δ (8-bit) --[scraper EOT]--> profile crop --> profile backbone
                                                          \\-> dlib chip    --> dlib-resnet

and :class:`faceguard.attacks.Evade` minimises the mean cosine between each view's embedding and
the face's clean embedding in that recognizer. The dlib chip is dlib's ``get_face_chip`` geometry
estimated from MTCNN's points (:func:`recognition.face_chip.chip_to_image`), warped bilinearly;
what is measured on the saved file uses dlib's exact chip extraction instead.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import Tensor, nn

from faceguard.protect.warp import FaceRegion, PhotoFaces, as_channels_first, as_rgb
from recognition.alignment import align_face
from recognition.face_chip import CHIP_SIZE, MTCNN_TEMPLATE, chip_to_image, mtcnn_face_chip

RECOGNIZERS = ("profile", "dlib-resnet")  # the crafting ensemble, in the order embeddings come


def chip_corners(landmarks: np.ndarray) -> np.ndarray:
    """The photo points (4, 2) at the corners of a face's dlib chip (from MTCNN's landmarks)."""
    edge = CHIP_SIZE - 1
    corners = np.array([[0, 0, 1], [edge, 0, 1], [0, edge, 1], [edge, edge, 1]], dtype=np.float64)
    return corners @ chip_to_image(landmarks, MTCNN_TEMPLATE).T


def region_to_chip(landmarks: np.ndarray, region: FaceRegion) -> Tensor:
    """2x3 map from the face region's pixels to its dlib chip's pixels."""
    forward = np.vstack([chip_to_image(landmarks, MTCNN_TEMPLATE), [0, 0, 1]])  # chip -> photo
    forward[:2, 2] -= region.box[:2]  # chip -> region
    return torch.from_numpy(np.linalg.inv(forward)[:2]).float()


class PhotoViews(nn.Module):
    """Every recognizer's view of the faces of one photo, from perturbed photo regions.

    ``forward(regions)`` takes the regions of all the photo's faces in face order (what
    :meth:`PhotoFaces.perturbed_regions` gives for index 0..n-1) and returns one [n, D] embedding
    tensor per recognizer (:data:`RECOGNIZERS` order): the profile backbone on the aligned crop,
    dlib-resnet on the chip.
    """

    def __init__(self, faces: PhotoFaces, backbone: nn.Module, dlib: nn.Module, to_chip: Tensor) -> None:
        super().__init__()
        self.backbone, self.dlib = backbone, dlib
        self.register_buffer("to_crop", faces.to_crop.clone())
        self.register_buffer("to_chip", to_chip.to(faces.to_crop.device))
        self.crop_size = faces.size

    def forward(self, regions: Tensor) -> list[Tensor]:
        if len(regions) != len(self.to_crop):
            raise ValueError(f"expected the regions of all {len(self.to_crop)} faces, got {len(regions)}")
        crops = warp_affine(regions, self.to_crop, (self.crop_size, self.crop_size), padding_mode="border")
        chips = warp_affine(regions, self.to_chip, (CHIP_SIZE, CHIP_SIZE), padding_mode="border")
        return [self.backbone(as_rgb(crops)), self.dlib(as_rgb(chips))]


@torch.no_grad()
def saved_views(colour: np.ndarray, landmarks: list[np.ndarray], crop_size: int, backbone: nn.Module,
                dlib: nn.Module, device: torch.device) -> list[Tensor]:
    """Unit embeddings per recognizer of faces as a scraper gets them from saved pixels: the
    profile's aligned crop (cv2) and dlib's exact chip extraction, both from the given landmarks."""
    rgb = np.repeat(colour[..., None], 3, axis=2) if colour.ndim == 2 else colour
    crops = torch.stack([as_channels_first(align_face(colour, points, crop_size).crop) for points in landmarks])
    chips = torch.stack([as_channels_first(mtcnn_face_chip(rgb, points)) for points in landmarks])
    return [F.normalize(backbone(as_rgb(crops.to(device))), dim=1), F.normalize(dlib(chips.to(device)), dim=1)]
