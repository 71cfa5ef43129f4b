"""A registry of model entry points, in the manner of timm: ``@register_model`` keyed by function name.

    model = create_model("mobilenet_v1_050", num_classes=5)
    list_models()  # ['mobilenet_v1_025', ...]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fn: Callable[..., nn.Module]
    default_size: int  # input side the architecture is meant for
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(*, default_size: int) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, fn, default_size, doc[0] if doc else "")
        return fn

    return wrap


def _load_families() -> None:
    # Importing the family modules runs their decorators.
    from . import mobilenet, resnet, tiny  # noqa: F401


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build architecture ``name``; entry points take only architecture arguments."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    return model_info(name).fn(num_classes=num_classes, **kwargs)


def validate_size(size: int) -> int:
    if size < 16 or size % 8:
        raise ValueError(f"image size must be a multiple of 8 and at least 16, got {size}")
    return size
