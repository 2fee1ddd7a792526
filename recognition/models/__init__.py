"""Model zoo: CIFAR-style networks (kuangliu/pytorch-cifar architectures) built by name.

Importing the family modules below registers them; use ``create_model`` / ``list_models``.
"""

from recognition.models.layers import Normalize
from recognition.models.registry import create_model, list_models, register_model
from recognition.models import cifar_resnet, densenet, googlenet, mobilenetv2, vgg  # noqa: F401  (register)

__all__ = ["Normalize", "create_model", "list_models", "register_model"]
