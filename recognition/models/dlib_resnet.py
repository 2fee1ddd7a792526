"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network of dlib's ``examples/dnn_face_recognition_ex.cpp`` (``anet_type``), which maps a
150 x 150 face chip (see :mod:`recognition.face_chip`) to a 128-d descriptor; two faces are the same
person when the Euclidean distance of their descriptors is below :data:`SAME_PERSON_THRESHOLD`
(0.6, dlib's value: 99.38 % on LFW). Layer by layer, as dlib computes it:

- input: dlib takes 8-bit RGB and feeds ``(pixel - mean[c]) / 256`` with a per-channel mean stored
  in the model file. This module takes the project's [0, 1] RGB NCHW images and maps them back:
  ``(255 * x - mean) / 256``;
- stem: conv 7x7/2 (32 ch, no padding: dlib pads only stride-1 convolutions) - affine - ReLU -
  max-pool 3x3/2 (no padding);
- residual blocks: conv3x3(stride) - affine - ReLU - conv3x3 - affine, added to the input, then
  ReLU. A downsampling block uses stride 2 without padding and 2x2/2 average-pools its input;
  dlib's ``add_prev`` adds tensors of different shapes by zero-padding both to the larger size
  (extra channels at the end, extra rows/columns at the bottom/right), which happens both in
  channels (32 -> 64 -> 128 -> 256) and, late in the net, in space (3x3 block output vs 4x4
  pooled input);
- widths: 3 x 32, then 64 (down + 3), 128 (down + 2), 256 (down + 2), 256 (down);
- head: global average pool - fully connected 256 -> 128 without bias.

"affine" is dlib's inference form of batch norm, ``gamma * x + beta`` per channel. Weights come
from the ``face-recognition-models`` package (CC0), decoded from dlib's own format by
:mod:`recognition.dlib_format` (no dlib needed) and cached as safetensors keyed by the file's
SHA-256, so later loads never decode or execute anything. Nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save
from torch import nn

from recognition.dlib_format import DlibFormatError, DlibNet, Layer, read_dnn
from recognition.files import file_sha256, write_bytes_atomic
from recognition.models.licences import weights_file
from recognition.models.registry import register_model

INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
SAME_PERSON_THRESHOLD = 0.6  # Euclidean distance between descriptors
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CACHE_FORMAT = 1  # bump when the conversion changes, so stale caches are not read
# (input channels, output channels, downsamples) of the 14 residual blocks, input to output
BLOCKS: tuple[tuple[int, int, bool], ...] = (
    (32, 32, False), (32, 32, False), (32, 32, False),
    (32, 64, True), (64, 64, False), (64, 64, False), (64, 64, False),
    (64, 128, True), (128, 128, False), (128, 128, False),
    (128, 256, True), (256, 256, False), (256, 256, False),
    (256, 256, True),
)


class Affine(nn.Module):
    """Per-channel ``gamma * x + beta`` (dlib's ``affine`` layer: batch norm folded for inference)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: zero-pad both tensors to the larger channel/height/width, then add."""
    size = [max(sa, sb) for sa, sb in zip(a.shape[1:], b.shape[1:])]

    def pad(t: torch.Tensor) -> torch.Tensor:
        c, h, w = (s - st for s, st in zip(size, t.shape[1:]))
        return F.pad(t, (0, w, 0, h, 0, c)) if c or h or w else t

    return pad(a) + pad(b)


def conv3x3(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    """dlib ``con<N,3,3,s,s>``: padding 1 at stride 1, none at stride 2 (dlib's default)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1 if stride == 1 else 0)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(block(x) + skip(x)), padded add."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = conv3x3(in_channels, out_channels, 2 if downsample else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, 1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_padded(y, skip))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet: [0, 1] RGB (N, 3, 150, 150) -> (N, 128) descriptors.

    Descriptors are not normalised, as dlib's are not (norms 1.3 to 1.7 on real faces). Other input
    sizes run but the model was trained (and its threshold set) on 150 x 150 dlib face chips.
    Weights and activations are kept channels-last: a forward-backward of one chip took about 20 %
    less time that way on one CPU thread (evasion crafting runs one per step), the same values.
    """

    def __init__(self):
        super().__init__()
        # dlib's default input means; the weights file stores the trained model's own
        self.register_buffer("mean_rgb", torch.tensor([122.782, 117.001, 104.298]))
        self.conv = nn.Conv2d(3, 32, 7, stride=2)
        self.affine = Affine(32)
        self.blocks = nn.Sequential(*(ResidualBlock(*spec) for spec in BLOCKS))
        self.fc = nn.Linear(256, DESCRIPTOR_SIZE, bias=False)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x * 255 - self.mean_rgb.view(1, 3, 1, 1)) / 256).contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def _layer_plan() -> list[tuple[str, str | None, dict[str, int]]]:
    """The layers dlib's file must hold, in forward order: (kind, our module prefix, attributes)."""
    plan: list[tuple[str, str | None, dict[str, int]]] = [
        ("con", "conv", {"num_filters": 32, "nr": 7, "stride_y": 2, "padding_y": 0}),
        ("affine", "affine", {}), ("relu", None, {}),
        ("max_pool", None, {"nr": 3, "stride_y": 2, "padding_y": 0}),
    ]
    for i, (_, width, down) in enumerate(BLOCKS):
        stride = 2 if down else 1
        plan += [
            ("con", f"blocks.{i}.conv1", {"num_filters": width, "nr": 3, "stride_y": stride,
                                          "padding_y": 1 if stride == 1 else 0}),
            ("affine", f"blocks.{i}.affine1", {}), ("relu", None, {}),
            ("con", f"blocks.{i}.conv2", {"num_filters": width, "nr": 3, "stride_y": 1, "padding_y": 1}),
            ("affine", f"blocks.{i}.affine2", {}),
        ]
        if down:
            plan.append(("avg_pool", None, {"nr": 2, "stride_y": 2, "padding_y": 0}))
        plan += [("add_prev", None, {}), ("relu", None, {})]
    plan += [("avg_pool", None, {"nr": 0, "stride_y": 1}),
             ("fc", "fc", {"num_outputs": DESCRIPTOR_SIZE, "num_inputs": 256, "bias_mode": 1})]
    return plan


def _layer_tensors(layer: Layer, prefix: str) -> dict[str, np.ndarray]:
    if layer.kind == "con":
        return {f"{prefix}.weight": layer.tensors["weight"], f"{prefix}.bias": layer.tensors["bias"]}
    if layer.kind == "affine":
        return {f"{prefix}.weight": layer.tensors["gamma"], f"{prefix}.bias": layer.tensors["beta"]}
    return {f"{prefix}.weight": np.ascontiguousarray(layer.tensors["weight"].T)}  # fc


def state_dict_from_dlib(net: DlibNet) -> dict[str, np.ndarray]:
    """Map a decoded dlib file onto :class:`DlibResNet`'s parameter names, checking every layer."""
    plan = _layer_plan()
    if len(net.layers) != len(plan) or net.input_size not in (None, (INPUT_SIZE, INPUT_SIZE)):
        raise DlibFormatError(f"not dlib's face-recognition ResNet: {len(net.layers)} layers "
                              f"(expected {len(plan)}), input size {net.input_size}")
    state = {"mean_rgb": np.asarray(net.input_mean_rgb, dtype=np.float32)}
    for index, ((kind, prefix, attrs), layer) in enumerate(zip(plan, net.layers)):
        found = {key: layer.attrs.get(key) for key in attrs}
        if layer.kind != kind or found != attrs:
            raise DlibFormatError(f"layer {index}: expected {kind} {attrs}, found {layer.kind} {found}")
        if prefix is not None:
            state.update(_layer_tensors(layer, prefix))
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()}


def default_weights_path() -> Path:
    """dlib's model file inside the installed ``face_recognition_models`` package.

    Located with ``find_spec`` rather than imported: the package's ``__init__`` needs
    ``pkg_resources``, which current setuptools no longer ships. Of its other files only the
    5-point predictor is read, by a test (:data:`recognition.models.licences.DLIB_MODELS`).
    """
    return weights_file("dlib-resnet")


def cache_dir() -> Path:
    """Converted-weights cache: ``$FACEGUARD_CACHE``, else ``~/.cache/faceguard``."""
    return Path(os.environ.get("FACEGUARD_CACHE") or Path.home() / ".cache" / "faceguard")


def load_dlib_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """State dict for :class:`DlibResNet` from a dlib model file (default: the packaged one).

    The first call decodes the file and writes ``dlib_resnet-v<CACHE_FORMAT>-<sha256>.safetensors``
    atomically into :func:`cache_dir`; later calls with the same file bytes read that cache
    (safetensors holds raw tensors only, so loading never runs code).
    """
    source = Path(path) if path is not None else default_weights_path()
    cached = cache_dir() / f"dlib_resnet-v{CACHE_FORMAT}-{file_sha256(source)}.safetensors"
    if not cached.exists():
        arrays = state_dict_from_dlib(read_dnn(source))
        write_bytes_atomic(cached, save(arrays, metadata={"source": source.name}))
    return {name: torch.from_numpy(array) for name, array in load_file(cached).items()}


@register_model("dlib-resnet", pretrained=True)
def dlib_resnet(width: float = 1.0, num_classes: int | None = None, pretrained: bool = True,
                weights: str | Path | None = None) -> DlibResNet:
    """dlib's face-recognition ResNet in eval mode, with dlib's weights unless ``pretrained=False``.

    ``width`` and ``num_classes`` exist for the registry's calling convention; only the
    architecture's own values (1.0 and 128) are accepted. ``weights`` is a dlib ``.dat`` file
    (default: the one shipped by ``face-recognition-models``).
    """
    if width != 1.0 or num_classes not in (None, DESCRIPTOR_SIZE):
        raise ValueError(f"dlib-resnet has fixed width 1.0 and {DESCRIPTOR_SIZE}-d descriptors "
                         f"(got width={width}, num_classes={num_classes})")
    model = DlibResNet()
    if pretrained:
        model.load_state_dict(load_dlib_weights(weights))
    return model.eval()
