"""Model zoo built by name: CIFAR-style classifiers (kuangliu/pytorch-cifar architectures) and
IR-ResNet face backbones ("ir18", "ir34", "ir50": the output is a 512-d embedding).

Importing the family modules below registers them; use ``create_model`` / ``list_models``.
"""

from recognition.models.layers import Normalize
from recognition.models.registry import create_model, list_models, register_model
from recognition.models import cifar_resnet, densenet, googlenet, iresnet, mobilenetv2, vgg  # noqa: F401  (register)

__all__ = ["Normalize", "create_model", "list_models", "register_model"]
