"""Class-wise error-minimizing noise per person for ``faceguard protect`` (one Δ per identity).

Unlearnable Examples' class-wise noise (:class:`~faceguard.attacks.ClasswiseErrorMinimizing`)
needs every person's faces at once: it trains a fresh copy of the profile's backbone (with a plain
softmax head, one row per person) to recognise the people of the folder while it learns one
perturbation per person on the aligned crop grid that makes them trivially easy to tell apart. A
recognizer later trained on the protected photos learns that shortcut instead of the faces.

:func:`learn_identity_noise` learns it from the clean aligned crops of every face of a folder;
:class:`IdentityNoise` holds the result (Δ per person, within ε, and the copy trained alongside,
whose cross-entropy measures how well a face still carries its person's shortcut) and is saved
with safetensors beside the outputs, so a resumed run pastes exactly the same noise.

``synthetic`` (:mod:`faceguard.attacks.synthetic`) gives each person a block pattern instead,
drawn from the seed and the number of people alone, with nothing trained; its classifier is
:func:`pattern_classifier`, which names a face by the pattern it carries.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn

from faceguard.attacks.poisons import ClasswiseErrorMinimizing
from faceguard.attacks.synthetic import SyntheticNoise
from faceguard.protect.warp import as_rgb
from faceguard.settings import CraftSettings
from recognition.files import write_bytes_atomic
from recognition.heads import MarginClassifier, SoftmaxHead

NOISE_FILE = "identity-noise.safetensors"
PATTERN_SCALE = 16.0  # logit of a face carrying exactly its own pattern (pattern_classifier)


@dataclass
class IdentityNoise:
    """Δ per person [K, C, S, S] on the aligned crop grid (|Δ| ≤ ε; C = 1 when learned on gray
    faces), the people's names in row order, and the classifier trained alongside it (eval mode)."""

    names: list[str]
    noise: Tensor
    model: nn.Module

    def rows(self, names: list[str | None]) -> Tensor:
        """Each face's row; a name without noise is an error that says which."""
        index = {name: k for k, name in enumerate(self.names)}
        missing = sorted({str(n) for n in names if n not in index})
        if missing:
            raise ValueError(f"no identity noise was learned for {', '.join(missing)}: learn it over the whole "
                             "folder (faceguard protect FOLDER, or Protector.learn_identity_noise)")
        return torch.tensor([index[n] for n in names], device=self.noise.device)

    def deltas(self, rows: Tensor, channels: int) -> Tensor:
        """The Δ of each face's row (:meth:`rows`) as [n, channels, S, S]. Noise learned on gray
        faces is repeated on colour photos; colour noise on a gray photo is the mean of its three
        channels (within ε, but weaker: a folder of gray photos learns gray noise)."""
        delta = self.noise[rows]
        if delta.shape[1] == channels:
            return delta
        return delta.mean(1, keepdim=True) if channels == 1 else delta.expand(-1, channels, -1, -1)

    def save(self, path: Path, meta: dict) -> None:
        """Write noise, classifier and names (plus ``meta``, JSON-able) atomically with safetensors;
        a :func:`pattern_classifier` is not written, as :meth:`load` derives it from the noise."""
        patterns = isinstance(self.model.backbone, _CentredPixels)
        tensors = {"noise": self.noise.detach().cpu().contiguous()}
        if not patterns:
            tensors |= {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        header = {"names": json.dumps(self.names), "meta": json.dumps(meta, sort_keys=True),
                  "patterns": json.dumps(patterns)}
        write_bytes_atomic(path, save(tensors, metadata=header))

    @staticmethod
    def stored_meta(path: Path) -> dict | None:
        """The ``meta`` a noise file was saved with (None if it is absent, damaged or not ours:
        the noise is then learned again and the file replaced)."""
        try:
            with safe_open(str(path), "pt") as handle:
                return json.loads(handle.metadata()["meta"])
        except (OSError, KeyError, ValueError, TypeError, SafetensorError):
            return None

    @classmethod
    def load(cls, path: Path, backbone: nn.Module, device: torch.device) -> IdentityNoise:
        """Read a noise file written by :meth:`save` for a profile with this ``backbone`` (no code runs)."""
        with safe_open(str(path), "pt") as handle:
            header = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        names = json.loads(header["names"])
        if json.loads(header.get("patterns", "false")):
            noise = tensors["noise"].to(device)
            return cls(names, noise, pattern_classifier(noise))
        width = tensors["model.head.linear.weight"].shape[1]
        model = _classifier(backbone, width, len(names))
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        return cls(names, tensors["noise"].to(device), model.to(device).eval())


class _AsRGB(nn.Module):
    """Gray crops [n, 1, S, S] as three equal channels (colour ones pass), before the backbone."""

    def forward(self, x: Tensor) -> Tensor:
        return as_rgb(x)


def _classifier(backbone: nn.Module, width: int, classes: int) -> MarginClassifier:
    """A copy of ``backbone`` (embeddings of ``width``) with a softmax head of ``classes`` rows."""
    return MarginClassifier(nn.Sequential(_AsRGB(), copy.deepcopy(backbone)), SoftmaxHead(width, classes))


class _CentredPixels(nn.Module):
    """Crops [n, 3, S, S] as flat vectors minus each crop's mean (the features of a pattern match)."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return flat - flat.mean(1, keepdim=True)


def pattern_classifier(noise: Tensor) -> MarginClassifier:
    """The classifier of synthetic identity noise [K, C, S, S]: a face's logit for person k is
    :data:`PATTERN_SCALE` · ⟨x − x̄, Δ_k⟩ / ‖Δ_k‖² on its (RGB) crop: the scale for the pattern a
    crop carries, plus a term from the face itself that varies from face to face. So its
    cross-entropy is near 0 where a face carries its person's pattern, and on clean faces it
    varies widely (0.04-5.5 on the five photos of tests/test_protect_identity_noise.py)."""
    rows = as_rgb(noise).flatten(1)
    head = SoftmaxHead(rows.shape[1], len(rows)).to(noise.device)
    with torch.no_grad():
        head.linear.weight.copy_(rows * PATTERN_SCALE / rows.pow(2).sum(1, keepdim=True).clamp_min(1e-12))
        head.linear.bias.zero_()
    return MarginClassifier(_CentredPixels(), head).eval()


def learn_identity_noise(backbone: nn.Module, crops: Tensor, names: list[str], settings: CraftSettings
                         ) -> IdentityNoise:
    """One Δ per person for aligned crops [N, C, S, S] in [0, 1] (C = 1: gray noise) of the named
    people (at least two), with ``settings``: class-wise error-minimizing noise (ε, inner steps and
    step size, batch size, seed; ``backbone`` is not changed, a seeded fresh copy is trained), or
    with ``settings.method == "synthetic"`` each person's block pattern times ε (seed and the
    number of people alone; people in sorted order). The error-minimizing rounds report their
    progress on stderr inside :func:`~faceguard.progress.showing_progress` ``(True)``, as
    ``faceguard protect`` without ``--quiet`` calls it: minutes of work on a large folder."""
    people = sorted(set(names))
    if len(people) < 2:
        raise ValueError(f"{settings.method} noise tells people apart, so it needs faces of at least "
                         f"two people; found {len(people)}")
    if settings.method == SyntheticNoise.name:
        drawn = SyntheticNoise(backbone, settings, classes=len(people))
        noise = drawn.class_noise(crops.shape[1], tuple(crops.shape[2:])).to(crops.device)
        return IdentityNoise(people, noise, pattern_classifier(noise))
    labels = torch.tensor([people.index(n) for n in names], device=crops.device)
    with torch.no_grad():
        width = int(backbone(as_rgb(crops[:1])).shape[1])
    attack = ClasswiseErrorMinimizing(_classifier(backbone, width, len(people)), settings)
    attack(crops, labels)
    return IdentityNoise(people, attack.noise.detach(), attack.trained)
