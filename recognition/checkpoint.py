"""Model checkpoints as safetensors weights plus a JSON sidecar describing how to rebuild the model.

safetensors holds only tensors, so loading a checkpoint never executes code (unlike pickle /
``torch.load``). The sidecar ``<name>.json`` holds the architecture config, e.g.
``{"model": "resnet18", "num_classes": 10, "width": 0.25}`` (see ``build_model``). Every file is
written atomically (temporary file in the same folder, then ``os.replace``) so a crash never
leaves a truncated file behind.

Training checkpoints (``save_training_checkpoint``) add the optimizer state beside the model:
``<name>.train.safetensors`` holds its tensors (SGD momentum buffers) and ``<name>.train.json``
its scalars (learning rate, ...), the epoch, the history and the training config. That JSON is
written last and records the SHA-256 of both tensor files, so a crash between the writes of one
save (new weights, old optimizer state) is detected on resume instead of silently mixing epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from recognition.files import file_sha256, write_bytes_atomic


def config_path(path: str | Path) -> Path:
    """Path of the JSON sidecar that goes with the weights file `path`."""
    return Path(path).with_suffix(".json")


def training_state_path(path: str | Path) -> Path:
    """Optimizer tensors of the training checkpoint `path` (``model.safetensors`` -> ``model.train.safetensors``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.train.safetensors")


def save_checkpoint(model: nn.Module, path: str | Path, config: dict) -> None:
    """Write the model's state_dict (parameters and buffers) to `path` and `config` next to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_tensors(path, model.state_dict())
    _write_json(config_path(path), config)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the (CPU) state_dict from `path` and the config from its JSON sidecar."""
    path = Path(path)
    state_dict = load_file(str(path))
    config = json.loads(config_path(path).read_text(encoding="utf-8"))
    return state_dict, config


def build_model(config: dict) -> nn.Module:
    """Build the (untrained) model a checkpoint config describes.

    Keys: ``model`` (registry name), ``num_classes`` (output size: classes, or the embedding size
    under a head; absent = the family's default), ``width``, optional ``model_kwargs`` (e.g.
    ``in_channels``, ``input_size``), and optionally ``head`` ("cosface", "arcface", "softmax") with
    ``head_classes``: then the model is ``MarginClassifier(backbone, head)``. Other keys (class
    names, ...) are ignored.
    """
    # Imported here so checkpoint I/O does not depend on the model zoo (and cannot form an import cycle).
    from recognition.heads import MarginClassifier, create_head
    from recognition.models import create_model

    model = create_model(config["model"], num_classes=config.get("num_classes"), width=config.get("width", 1.0),
                         **config.get("model_kwargs", {}))
    if config.get("head") is None:
        return model
    return MarginClassifier(model, create_head(config["head"], config["num_classes"], config["head_classes"]))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model named in the checkpoint's config, load its weights strictly, return it in eval mode."""
    state_dict, config = load_checkpoint(path)
    model = build_model(config)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


def save_training_checkpoint(
    path: str | Path, model: nn.Module, model_config: dict, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Write the model checkpoint `path`, then the optimizer state and `state` (JSON-able: epoch, ...).

    Optimizer per-parameter state must be tensors (true of torch's SGD and Adam): they go to
    safetensors as ``<parameter index>.<name>``, the param_groups' scalars to JSON.
    """
    path = Path(path)
    save_checkpoint(model, path, model_config)
    optimizer_state = optimizer.state_dict()
    tensors = {}
    for index, entries in optimizer_state["state"].items():
        for name, value in entries.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {name!r} is a {type(value).__name__}, not a tensor")
            tensors[f"{index}.{name}"] = value
    tensor_path = training_state_path(path)
    _write_tensors(tensor_path, tensors)
    digests = {file.name: file_sha256(file) for file in (path, tensor_path)}
    _write_json(config_path(tensor_path), {**state, "param_groups": optimizer_state["param_groups"], "sha256": digests})


def load_training_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load a ``save_training_checkpoint`` into `model` and `optimizer`; return its `state` dict.

    Raises ValueError when the files do not belong to one save (an interrupted write).
    """
    path = Path(path)
    tensor_path = training_state_path(path)
    record = json.loads(config_path(tensor_path).read_text(encoding="utf-8"))
    digests = record.pop("sha256")
    for name, digest in digests.items():
        if file_sha256(path.parent / name) != digest:
            raise ValueError(f"{path.parent / name} does not match {config_path(tensor_path)}: the last save "
                             "was interrupted, so this checkpoint cannot be resumed")
    model.load_state_dict(load_file(str(path)), strict=True)
    optimizer_state: dict = {"state": {}, "param_groups": record.pop("param_groups")}
    for key, tensor in load_file(str(tensor_path)).items():
        index, name = key.split(".", 1)
        optimizer_state["state"].setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict(optimizer_state)
    return record


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically write `tensors` (copied to CPU, contiguous) as a safetensors file."""
    cpu = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    write_bytes_atomic(path, save(cpu))


def _write_json(path: Path, data: dict) -> None:
    """Atomically write `data` as indented, key-sorted JSON."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
