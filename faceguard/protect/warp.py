"""The faces of one photo as a differentiable function of their perturbation (kornia warps).

Crafting must survive what a scraper does with the saved photo: detect, align (a bilinear warp to
the template), 8-bit quantise. So the surrogate is not fed the aligned crop plus Δ; it is fed
the crop re-warped from the *perturbed photo*:

    δ (crop grid, one per face) --warp to the photo, mask--> Δ (photo pixels)
    photo region + Δ --clamp, 8-bit rounding (straight-through)--> --warp to the template--> F

Δ is parametrised on the crop grid (``δ`` has the crop's size) and pasted into the photo by the
inverse warp: bilinear interpolation never leaves [−ε, ε], the paste mask keeps every pixel
outside the face region untouched, and Δ varies smoothly at the scale of one crop pixel, so a
re-detection that shifts the landmarks by a fraction of a crop pixel (the scraper never sees our
exact matrix) samples nearly the same Δ. A Δ free per photo pixel would not survive that on large
faces: the bilinear crop reads 4 photo pixels per crop pixel, so only those get a gradient, and
after a sub-pixel shift the scraper reads the others. Only Δ is pasted back, never a warped
crop (which would blur large faces).

Pre-cropped faces (``faceguard protect --aligned``, :func:`fit_region`): the whole image is one
face and the "alignment" is the one ``faceguard fit --aligned`` and the face benchmarks apply,
Pillow's ``ImageOps.fit`` (centre square, bicubic resize to the crop size). That resize is linear,
so it is fed to the surrogate as its exact matrices (:func:`resize_matrix`): crop = Ry · photo · Rxᵀ.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from PIL import Image, ImageOps
from torch import Tensor, nn

from faceguard.shaping import feather_map, texture_budget
from recognition.alignment import AlignedFace, align_face, paste_mask, transform_points


@dataclass(frozen=True, eq=False)
class FaceRegion:
    """Where one face's perturbation lives: the photo box, its paste mask and the crop geometry.

    ``box`` = x0, y0, x1, y1 (exclusive ends) of the photo region the aligned crop reads;
    ``mask`` [h, w] bool marks the region pixels a perturbation may change; ``aligned`` is the
    clean crop (at the surrogate's size) with its matrices. ``resize`` (pre-cropped faces only):
    the crop is not the template warp of the region but Ry [S, h] · region · Rxᵀ [S, w].
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray
    aligned: AlignedFace
    resize: tuple[np.ndarray, np.ndarray] | None = None


def crop_corners(size: int, to_photo: np.ndarray) -> np.ndarray:
    """The photo points (4, 2) at the corner pixels of a ``size``² crop whose 2x3 map to the photo
    is ``to_photo``."""
    edge = size - 1
    return transform_points(np.array([[0, 0], [edge, 0], [0, edge], [edge, edge]]), to_photo)


def face_region(photo: np.ndarray, landmarks: np.ndarray, size: int, cover: np.ndarray | None = None) -> FaceRegion:
    """Align one face at ``size`` and find the photo box and mask its perturbation may touch; the
    box also holds the photo points ``cover`` (e.g. the corners of another recognizer's chip, which
    then reads the perturbed region), while the mask stays the crop's."""
    aligned = align_face(photo, landmarks, size)
    corners = crop_corners(size, aligned.inverse)
    if cover is not None:
        corners = np.concatenate([corners, cover])
    height, width = photo.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 2, 0, [width, height])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 3, 0, [width, height])
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the face lies outside the photo")
    mask = paste_mask(photo.shape, aligned)[y0:y1, x0:x1]
    return FaceRegion((int(x0), int(y0), int(x1), int(y1)), mask, aligned)


def fit_box(width: int, height: int) -> tuple[float, float, float]:
    """Left, top and side of the centred square ``ImageOps.fit`` crops from a width x height image."""
    side = min(width, height)
    return (width - side) / 2, (height - side) / 2, side


def resize_matrix(length: int, start: float, end: float, size: int) -> np.ndarray:
    """[size, length] weights of Pillow's bicubic resize of the span [start, end) of a row of
    ``length`` pixels to ``size`` pixels, read off Pillow itself by resizing the identity matrix
    as a float image (float resizing does not round; 8-bit resizing rounds once more, after the
    horizontal pass, so 8-bit ``ImageOps.fit`` differs from the matrices by at most one level)."""
    eye = Image.fromarray(np.eye(length, dtype=np.float32), mode="F")
    return np.asarray(eye.resize((size, length), Image.Resampling.BICUBIC, box=(start, 0, end, length))).T


def fit_crop(photo: np.ndarray, size: int) -> np.ndarray:
    """``ImageOps.fit`` of uint8 HxW / HxWx3 pixels to size x size (bicubic): a pre-cropped face's crop."""
    return np.asarray(ImageOps.fit(Image.fromarray(photo), (size, size), method=Image.Resampling.BICUBIC))


def fit_region(photo: np.ndarray, size: int) -> FaceRegion:
    """The whole photo as one pre-cropped face: its crop is ``ImageOps.fit`` to ``size``.

    The region is every pixel the bicubic resize reads; the mask, every pixel whose centre lies in
    the centred square (the rows or columns ``fit`` cuts off never reach the crop: left unchanged).
    The similarity matrices are the fit's scale and offset (pixel centres at integers, as cv2's).
    """
    height, width = photo.shape[:2]
    left, top, side = fit_box(width, height)
    ry, rx = resize_matrix(height, top, top + side, size), resize_matrix(width, left, left + side, size)
    (y0, y1), (x0, x1) = [(int(used[0]), int(used[-1]) + 1) for used in
                          (np.flatnonzero(ry.any(0)), np.flatnonzero(rx.any(0)))]
    scale = size / side
    matrix = np.array([[scale, 0, (0.5 - left) * scale - 0.5], [0, scale, (0.5 - top) * scale - 0.5]])
    inverse = np.array([[1 / scale, 0, (0.5 / scale) + left - 0.5], [0, 1 / scale, (0.5 / scale) + top - 0.5]])
    ys, xs = np.arange(y0, y1)[:, None] + 0.5, np.arange(x0, x1)[None, :] + 0.5
    mask = (ys >= top) & (ys <= top + side) & (xs >= left) & (xs <= left + side)
    return FaceRegion((x0, y0, x1, y1), mask, AlignedFace(fit_crop(photo, size), matrix, inverse),
                      (ry[:, y0:y1], rx[:, x0:x1]))


def as_channels_first(pixels: np.ndarray) -> Tensor:
    """uint8 HxW or HxWxC array -> float [C, H, W] in [0, 1]."""
    array = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


def rgb_view(colour: np.ndarray) -> np.ndarray:
    """HxWx3 RGB of uint8 colour pixels (grayscale repeated), what the detector and dlib's chip read."""
    return np.repeat(colour[..., None], 3, axis=2) if colour.ndim == 2 else colour


def as_rgb(x: Tensor) -> Tensor:
    """[n, 1 or 3, H, W] images as three channels (gray repeated), what the recognizers read."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def stable_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample CE as softplus(logsumexp(other logits) − target logit), exact in float32.

    ``F.cross_entropy`` back-propagates softmax − one-hot, and for a confident face (p_y within
    float32 rounding of 1, which a head row equal to the face's own embedding gives: margin logit
    s(1 − m) = 41.6 against ~20) the target-class term 1 − p_y becomes exactly 0, so ∇θ CE loses
    it and the alignment objective turns erratic. softplus' derivative σ(·) keeps it.
    """
    index = labels[:, None]
    others = logits.scatter(1, index, float("-inf"))
    return F.softplus(torch.logsumexp(others, dim=1) - logits.gather(1, index)[:, 0])


class PhotoFaces(nn.Module):
    """Per-face cross-entropy of the surrogate on crops re-warped from the perturbed photo.

    :meth:`crops` maps crop-grid images z = clean crop + δ [n, C, S, S] of the faces ``index`` [n]
    to what a scraper aligns from the perturbed photo, and :meth:`crop_loss` gives CE(F(crop), label)
    [n]. :class:`Alignment` crafts with ``preprocess=model.crops`` and ``loss_fn=crop_loss`` with y
    the face indices: per-face tensors are looked up by index, so the loss vmaps (per-image
    alignment losses), and the warp, which does not depend on θ, is differentiated once per step
    rather than in every pass of the crafting backend. ``colour`` holds the photo's colour channels
    only (1 = grayscale, fed to the surrogate as three equal channels).

    ``budget_floor`` < 1 or ``feather`` > 0 multiply each paste mask by the perceptual budget map of
    :mod:`faceguard.shaping` (texture budget of the clean region, feather at the crop's border), so
    Δ = warped δ · mask stays within that fraction of ε pixel by pixel.

    ``work_scale`` < 1 crafts on the regions area-downscaled by that factor (:func:`work_matrix`
    maps region pixels to work pixels; :attr:`to_work` holds it per face): everything a method
    reads (:meth:`photo_delta`, :meth:`perturbed_regions`, :meth:`crops`) is then at the work scale,
    while :meth:`saved_delta` gives Δ at full resolution for the photo that is saved. Evasion uses
    it for large faces, whose views sample far fewer pixels than the region holds.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, photo: np.ndarray,
                 regions: list[FaceRegion], labels: Tensor, work_scale: float = 1.0,
                 budget_floor: float = 1.0, feather: float = 0.0) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        size = regions[0].aligned.size
        height = max(r.box[3] - r.box[1] for r in regions)
        width = max(r.box[2] - r.box[0] for r in regions)
        if not 0 < work_scale <= 1 or (work_scale < 1 and regions[0].resize is not None):
            raise ValueError(f"work_scale must lie in (0, 1], and be 1 for pre-cropped faces; got {work_scale}")
        self.size, self.full_size = size, (height, width)
        self.region_size = (max(1, round(height * work_scale)), max(1, round(width * work_scale)))
        self.channels = 1 if photo.ndim == 2 else photo.shape[2]
        device = labels.device
        pad = [(0, width - (r.box[2] - r.box[0]), 0, height - (r.box[3] - r.box[1])) for r in regions]
        # Replicate padding: the template warp then sees the photo edge repeated, as cv2's border mode.
        # Only the regions are converted to float: a photo may hold many times their pixels.
        self.register_buffer("regions", torch.stack([
            F.pad(as_channels_first(photo[y0:y1, x0:x1])[None], p, mode="replicate")[0]
            for (x0, y0, x1, y1), p in zip((r.box for r in regions), pad)]).to(device))
        self.register_buffer("masks", torch.stack([
            F.pad(torch.from_numpy(r.mask).float()[None], p)
            for r, p in zip(regions, pad)]).to(device))
        self.register_buffer("clean_crops", torch.stack([
            as_channels_first(r.aligned.crop) for r in regions]).to(device))
        to_work = torch.from_numpy(work_matrix(self.full_size, self.region_size)).float()
        from_work = torch.linalg.inv(to_work)
        to_crop, to_region = self._matrices(regions, inverse=False), self._matrices(regions, inverse=True)
        if budget_floor < 1 or feather > 0:  # the perceptual budget map (faceguard.shaping), at photo resolution
            self.masks = self.masks * self._budget(to_region.to(device), size, budget_floor, feather)
        self.register_buffer("to_work", to_work.expand(len(regions), 3, 3).clone().to(device))
        self.register_buffer("full_to_region", to_region.to(device))
        self.register_buffer("to_crop", (to_crop @ from_work).to(device))
        self.register_buffer("to_region", (to_work[:2] @ _homogeneous(to_region)).to(device))
        if self.region_size != self.full_size:
            self.register_buffer("full_masks", self.masks)
            self.regions = F.interpolate(self.regions, size=self.region_size, mode="area")
            self.masks = F.interpolate(self.masks, size=self.region_size, mode="area")
        self.register_buffer("labels", labels)
        self.resized = regions[0].resize is not None
        if self.resized:  # pre-cropped faces: one per photo, so no padding to a common region size
            if len(regions) != 1:
                raise ValueError("a pre-cropped photo holds exactly one face")
            ry, rx = (torch.tensor(m, dtype=torch.float32, device=device)[None] for m in regions[0].resize)
            self.register_buffer("resize_rows", ry)
            self.register_buffer("resize_columns", rx)

    def _budget(self, to_region: Tensor, size: int, floor: float, feather: float) -> Tensor:
        """Per region pixel, the fraction of ε a change may use [n, 1, h, w]: the texture budget of
        the clean region times the crop grid's feather warped into the photo (as Δ is)."""
        budget = texture_budget(self.regions, floor)
        if feather > 0:
            fade = feather_map(size, size, feather, self.regions.device).expand(len(self.regions), -1, -1, -1)
            budget = budget * warp_affine(fade, to_region, self.full_size, padding_mode="zeros")
        return budget

    @staticmethod
    def _matrices(regions: list[FaceRegion], inverse: bool) -> Tensor:
        """Region-pixel -> crop matrices (or crop -> region), [N, 2, 3]."""
        out = []
        for region in regions:
            offset = np.array(region.box[:2], dtype=np.float64)
            if inverse:
                matrix = region.aligned.inverse.copy()
                matrix[:, 2] -= offset
            else:
                matrix = region.aligned.matrix.copy()
                matrix[:, 2] += matrix[:, :2] @ offset
            out.append(torch.from_numpy(matrix).float())
        return torch.stack(out)

    def photo_delta(self, z: Tensor, index: Tensor) -> Tensor:
        """Δ in (work-scale) region pixels [n, C, h, w] of crop-grid images ``z``: warped δ, zero off
        the mask."""
        delta = warp_affine(z - self.clean_crops[index], self.to_region[index], self.region_size,
                            padding_mode="zeros")
        return delta * self.masks[index]

    def saved_delta(self, z: Tensor, index: Tensor) -> Tensor:
        """Δ in full-resolution region pixels: what is added to the photo that is saved."""
        if self.region_size == self.full_size:
            return self.photo_delta(z, index)
        delta = warp_affine(z - self.clean_crops[index], self.full_to_region[index], self.full_size,
                            padding_mode="zeros")
        return delta * self.full_masks[index]

    def perturbed_regions(self, z: Tensor, index: Tensor) -> Tensor:
        """The faces' photo regions [n, C, h, w] with Δ pasted in, as saved: clamped, 8-bit."""
        return quantize_straight_through((self.regions[index] + self.photo_delta(z, index)).clamp(0, 1))

    def crops(self, z: Tensor, index: Tensor) -> Tensor:
        """What a scraper aligns from the perturbed photo: 8-bit region, re-warped to the template
        (pre-cropped faces: resized as ``ImageOps.fit`` does)."""
        region = self.perturbed_regions(z, index)
        if self.resized:  # Pillow's bicubic fit, rounded to 8 bits as Pillow's output is
            crop = self.resize_rows[index, None] @ region @ self.resize_columns[index, None].transpose(-1, -2)
            return quantize_straight_through(crop.clamp(0, 1))
        return warp_affine(region, self.to_crop[index], (self.size, self.size), padding_mode="border")

    def crop_loss(self, crops: Tensor, index: Tensor) -> Tensor:
        """Per-face CE of the surrogate on aligned crops [n, C, S, S] (C = 1 or 3)."""
        return self.class_loss(crops, self.labels[index])

    def class_loss(self, crops: Tensor, classes: Tensor) -> Tensor:
        """Per-face CE (margin head) of aligned crops toward the head rows ``classes``."""
        return stable_cross_entropy(self.head(self.backbone(as_rgb(crops)), classes), classes)

    def next_class(self, index: Tensor) -> Tensor:
        """The head row after each face's own, cyclically: the class-targeted poison's target."""
        return (self.labels[index] + 1) % self.head.weight.shape[0]


def work_matrix(full: tuple[int, int], work: tuple[int, int]) -> np.ndarray:
    """3x3 map from pixels of an image of ``full`` (height, width) to the pixels of its area
    resize to ``work`` (pixel centres at integers, as cv2 and kornia place them)."""
    sy, sx = work[0] / full[0], work[1] / full[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def _homogeneous(matrices: Tensor) -> Tensor:
    """[n, 2, 3] affine maps as [n, 3, 3]."""
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=matrices.dtype).expand(len(matrices), 1, 3)
    return torch.cat([matrices, bottom], dim=1)


def quantize_straight_through(x: Tensor) -> Tensor:
    """x rounded to the 8-bit grid in the forward pass, identity in the backward pass."""
    return x + ((x * 255).round() / 255 - x).detach()


def crop_loss(model: PhotoFaces, crops: Tensor, index: Tensor) -> Tensor:
    """``loss_fn`` over :class:`PhotoFaces` for aligned crops (y = face indices): the crafted crops
    of :meth:`PhotoFaces.crops`, or crops re-aligned from a saved photo (the scraper's view)."""
    return model.crop_loss(crops, index)
