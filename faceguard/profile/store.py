"""Protection profiles: a face surrogate, its target gradient and where both came from, in two files.

A profile is what ``faceguard protect`` needs besides the photos: the surrogate F (an IR-ResNet
backbone under a CosFace head, trained by ``faceguard fit``), the target gradient
T = ∇θ Σ −log(1 − p_y(x)) taken on the surrogate's own training crops, and the crop size the
surrogate reads. ``NAME.safetensors`` holds the tensors (``model.<state_dict key>`` and
``target.<parameter name>``); ``NAME.json`` holds the model config (what
:func:`recognition.checkpoint.build_model` rebuilds), the class names, the crop size and the
provenance (command line, corpus checksums, training history). Loading reads tensors and JSON only:
nothing in a profile file can execute code.

T covers the backbone parameters only. The victim trains its own head for the protected people,
so only the feature extractor is shared between surrogate and victim; and identities the surrogate
never saw get head rows at protection time (their mean embedding: CosFace rows are class centres),
which changes the head's shape but not the backbone's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from recognition.checkpoint import build_model, config_path
from recognition.files import file_sha256, write_bytes_atomic

FORMAT = "faceguard-profile"
VERSION = 1
DEFAULT_PROFILE = Path(__file__).resolve().parent / "default.safetensors"


@dataclass
class Profile:
    """A loaded profile: the surrogate (eval mode), T for its backbone parameters, and the JSON."""

    model: nn.Module
    target: list[Tensor]
    config: dict
    sha256: str = ""  # of the tensors file, so outputs can name the exact profile that made them

    @property
    def input_size(self) -> int:
        """Side of the aligned face crop the surrogate reads (the ArcFace template scaled to it)."""
        return int(self.config["input_size"])

    @property
    def classes(self) -> list[str]:
        """Identity names of the surrogate's head rows, in row order."""
        return list(self.config["classes"])

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    @property
    def head(self) -> nn.Module:
        return self.model.head

    def target_params(self) -> list[nn.Parameter]:
        """The backbone parameters T is taken over, in T's order."""
        return list(self.model.backbone.parameters())

    def to(self, device: str | torch.device) -> Profile:
        """Move surrogate and T to ``device`` (in place); returns self."""
        self.model.to(device)
        self.target = [t.to(device) for t in self.target]
        return self


def save_profile(path: str | Path, model: nn.Module, target: list[Tensor], config: dict) -> Path:
    """Write ``path`` (tensors) and its ``.json`` (``config`` plus format and version), atomically.

    ``model`` is a MarginClassifier built from ``config["model"]``; ``target`` has one tensor per
    backbone parameter, in ``model.backbone.parameters()`` order.
    """
    path = Path(path)
    names = [f"backbone.{name}" for name, _ in model.backbone.named_parameters()]
    if len(names) != len(target):
        raise ValueError(f"target has {len(target)} tensors, the backbone {len(names)} parameters")
    tensors = {f"model.{key}": value for key, value in model.state_dict().items()}
    tensors |= {f"target.{name}": t for name, t in zip(names, target)}
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    record = {"format": FORMAT, "version": VERSION, **config}
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    write_bytes_atomic(path, save(tensors))
    write_bytes_atomic(config_path(path), text.encode())
    return path


def load_profile(path: str | Path | None = None, device: str | torch.device = "cpu") -> Profile:
    """Read a profile (default: the one shipped in the package) onto ``device``, in eval mode."""
    path = Path(path) if path is not None else DEFAULT_PROFILE
    sidecar = config_path(path)
    if not path.is_file() or not sidecar.is_file():
        raise FileNotFoundError(f"profile {path} needs both {path.name} and {sidecar.name}")
    config = json.loads(sidecar.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ValueError(f"{sidecar} is not a {FORMAT} version {VERSION} file")
    tensors = load_file(str(path))
    model = build_model(config["model"])
    state = {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
    model.load_state_dict(state, strict=True)
    names = [f"backbone.{name}" for name, _ in model.backbone.named_parameters()]
    missing = [name for name in names if f"target.{name}" not in tensors]
    if missing:
        raise ValueError(f"{path} lacks the target gradient of {missing[0]} (and {len(missing) - 1} more)")
    target = [tensors[f"target.{name}"] for name in names]
    if any(t.shape != p.shape for t, p in zip(target, model.backbone.parameters())):
        raise ValueError(f"{path}: target gradient shapes do not match the backbone")
    return Profile(model.eval(), target, config, file_sha256(path)).to(device)
