"""The compact CNN family. ``create_model(name, num_classes=...)`` builds one; ``list_models()`` names them."""

from .registry import ModelInfo, create_model, list_models, model_info, register_model, validate_size
from .stats import count_macs, count_params

__all__ = [
    "ModelInfo",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "validate_size",
]
