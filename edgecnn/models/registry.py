"""A registry of model entry points, in the manner of timm: ``@register_model`` keyed by function name.

It imports no model family: the families register themselves when the edgecnn.models package imports them.

    model = create_model("mobilenet_v1_050", num_classes=5)
    list_models()  # ['mobilenet_v1_025', ...]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..runtime.spec import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fn: Callable[..., nn.Module]
    default_size: int  # input side the architecture is meant for
    description: str
    # The data config (timm's pretrained_cfg): the preprocessing that the architecture's starting weights expect.
    crop_pct: float = 1.0  # size / resize of the evaluation centre crop (0.875: ImageNet's 256 -> 224)
    interpolation: str = "bilinear"  # resize filter of the evaluation view
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, 0..1 pixel scale
    std: tuple[float, float, float] = IMAGENET_STD  # per channel, 0..1 pixel scale
    classifier: str = "head.fc"  # the module replaced for a dataset's classes; all else is the backbone
    weights: str | None = None  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    imagenet_top1: float | None = None  # ImageNet-1K top-1 (%) of those weights, as torchvision publishes it


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(*, default_size: int, **data_config: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an entry point under its function name; ``data_config`` sets ModelInfo's optional fields."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, fn, default_size, doc[0] if doc else "", **data_config)
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
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
