"""Choosing the torch device from a user's ``--device`` value.

Its own module because detection, training and the commands all need it, and none of them should
import another (e.g. the face detector the trainer) just for it.
"""
from __future__ import annotations

import torch


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn "auto" (CUDA when available, else CPU) or an explicit device name into a device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return device
