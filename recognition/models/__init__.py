"""Model zoo built by name: CIFAR-style classifiers (kuangliu/pytorch-cifar architectures) and
IR-ResNet face backbones ("ir18", "ir34", "ir50": the output is a 512-d embedding), and the
pretrained face recognizers "dlib-resnet" (dlib's ResNet, 128-d descriptors), "sface" (OpenCV Zoo's
SFace, 128-d), "insightface-mbf", "edgeface-s" and "facenet-casia" (512-d), weights read offline
from installed packages.

Importing the family modules below registers them; use ``create_model`` / ``list_models``.
"""

from recognition.models.layers import Normalize
from recognition.models.registry import create_model, list_models, register_model
from recognition.models import (  # noqa: F401  (register)
    cifar_resnet, densenet, dlib_resnet, facenet_casia, googlenet, iresnet, mobilenetv2, onnx_recognizers, vgg)

__all__ = ["Normalize", "create_model", "list_models", "register_model"]
