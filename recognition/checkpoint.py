"""Model checkpoints as safetensors weights plus a JSON sidecar describing how to rebuild the model.

safetensors holds only tensors, so loading a checkpoint never executes code (unlike pickle /
``torch.load``). The sidecar ``<name>.json`` holds the architecture config, e.g.
``{"model": "resnet18", "num_classes": 10, "width": 0.25}``. Both files are written atomically
(temporary file in the same folder, then ``os.replace``) so a crash never leaves a truncated
checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def config_path(path: str | Path) -> Path:
    """Path of the JSON sidecar that goes with the weights file `path`."""
    return Path(path).with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | Path, config: dict) -> None:
    """Write the model's state_dict (parameters and buffers) to `path` and `config` next to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    _atomic_write(config_path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the (CPU) state_dict from `path` and the config from its JSON sidecar."""
    path = Path(path)
    state_dict = load_file(str(path))
    config = json.loads(config_path(path).read_text(encoding="utf-8"))
    return state_dict, config


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model named in the checkpoint's config, load its weights strictly, return it in eval mode."""
    # Imported here so checkpoint I/O does not depend on the model zoo (and cannot form an import cycle).
    from recognition.models import create_model

    state_dict, config = load_checkpoint(path)
    model = create_model(config["model"], num_classes=config["num_classes"], width=config.get("width", 1.0))
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes the file private (0600); checkpoints are ordinary files
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
