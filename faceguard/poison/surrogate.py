"""Surrogate networks from local files: this project's checkpoints or torchvision weights.

Nothing downloads. A surrogate is either a faceguard/recognition checkpoint (``.safetensors`` with
its ``.json`` sidecar) or a torchvision architecture (``--arch torchvision:resnet18``) with weights
a user downloaded themselves (``.safetensors``, or the official ``.pth`` read with
``torch.load(weights_only=True)``, which only rebuilds tensors and never runs code). torchvision
ImageNet models expect normalised input, so they are wrapped to take [0, 1] images like every
other model here.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from recognition.checkpoint import config_path, load_model
from recognition.models.layers import IMAGENET_MEAN, IMAGENET_STD, Normalize


def load_surrogate(path: str | Path, arch: str | None = None, num_classes: int | None = None,
                   device: str | torch.device = "cpu") -> nn.Module:
    """Load a surrogate in eval mode from ``path``.

    ``arch=None``: a checkpoint of this project (weights + JSON sidecar). ``arch="torchvision:NAME"``:
    ``torchvision.models.get_model(NAME)`` with the weights in ``path`` (state dict, read into the
    torchvision model itself, so its keys are torchvision's), then ImageNet normalisation put in
    front: ``nn.Sequential(Normalize, model)``. ``num_classes`` defaults to the size the weights imply.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"surrogate weights not found: {path}")
    if arch is None:
        if not config_path(path).is_file():
            raise ValueError(f"{path}: no {config_path(path).name} beside it; pass --arch torchvision:NAME "
                             "for plain torchvision weights")
        return load_model(path, device)
    if not arch.startswith("torchvision:"):
        raise ValueError(f"unknown architecture {arch!r}; use torchvision:NAME (e.g. torchvision:resnet18)")
    import torchvision

    state = _read_state_dict(path)
    if num_classes is None:
        num_classes = _output_size(state)
    model = torchvision.models.get_model(arch.removeprefix("torchvision:"), weights=None, num_classes=num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit {arch}: {str(err).splitlines()[0]}") from err
    return nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), model).to(device).eval()


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — any unpickling refusal becomes one clear line
        raise ValueError(f"{path}: not a plain tensor state dict ({type(err).__name__})") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


def _output_size(state: dict[str, Tensor]) -> int:
    """Classes implied by the last 2-d weight (the classifier) of a state dict."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not matrices:
        raise ValueError("cannot infer the number of classes; pass num_classes")
    return matrices[-1].shape[0]
