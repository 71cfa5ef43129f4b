"""The compact CNN family. ``create_model(name, num_classes=...)`` builds one; ``list_models()`` names them.

The registry imports no model family: each family module registers its entry points with
``@register_model`` when this package imports it, as timm's families do.
"""

# The model families, imported for their @register_model side effect: a new family joins this line.
from . import mobilenet, resnet, tiny, torchvision_zoo  # noqa: F401
from .inputs import pixels_to_tensor
from .registry import ModelInfo, create_model, list_models, model_info, register_model, validate_size
from .stats import count_macs, count_params

__all__ = [
    "ModelInfo",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "model_info",
    "pixels_to_tensor",
    "register_model",
    "validate_size",
]
