"""The preprocessing spec: how an image becomes a model input, defined once for training, export and runtime.

    spec = PreprocessSpec(size=64, labels=("circle", "square"))
    spec.resize        # shorter side before the centre crop
    PreprocessSpec.from_dict(spec.to_dict()) == spec

The spec travels with the model: it is saved in every checkpoint and embedded in the ONNX file's
``metadata_props`` (see ``METADATA_KEYS``), so the runtime needs no side files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

# ImageNet statistics on the 0..1 pixel scale, as torchvision writes them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
LAYOUTS = ("NHWC", "NCHW")

# Keys of the ONNX metadata_props written by export and read by the runtime.
META_SPEC = "edgecnn.spec"  # JSON of PreprocessSpec.to_dict(), labels included
META_INPUT = "edgecnn.input"  # "uint8-nhwc" (pixels in, normalization in the graph) or "float-nchw"
META_ARCH = "edgecnn.arch"
META_VERSION = "edgecnn.version"
META_CHECKPOINT_SHA256 = "edgecnn.checkpoint_sha256"
META_OPSET = "edgecnn.opset"
META_PRECISION = "edgecnn.precision"  # fp32, int8, int8-dynamic, fp16
# Optional (not in METADATA_KEYS): written by calibrated exports and `edgecnn calibrate`.
META_OOD = "edgecnn.ood"  # JSON of decode.OodRule: {"score": "energy", "threshold": ..., "recall": 0.95}
META_TEMPERATURE = "edgecnn.temperature"  # the softmax temperature already applied to the logits
METADATA_KEYS = (META_SPEC, META_INPUT, META_ARCH, META_VERSION, META_CHECKPOINT_SHA256, META_OPSET, META_PRECISION)

INPUT_UINT8_NHWC = "uint8-nhwc"
INPUT_FLOAT_NCHW = "float-nchw"

# The softmax output that edgecnn's exporter adds beside the logits and that the runtime reads when present.
PROBABILITIES_OUTPUT = "probabilities"
LOGITS_OUTPUT = "logits"  # beside it: the pre-softmax scores (unknown-input rejection reads them)


@dataclass(frozen=True)
class PreprocessSpec:
    """Decode to RGB, resize the shorter side to ``resize``, centre-crop ``size`` x ``size``, normalize."""

    size: int  # side of the square model input, pixels
    labels: tuple[str, ...] = ()  # class names; index = position
    crop_pct: float = 1.0  # size / resize: 1.0 keeps the whole shorter side, 0.875 crops like ImageNet eval
    interpolation: str = "bilinear"  # Pillow filter used for the resize (antialiased when shrinking)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, 0..1 pixel scale
    std: tuple[float, float, float] = IMAGENET_STD  # per channel, 0..1 pixel scale

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"input size must be an integer >= 8, got {self.size!r}")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in [0.1, 1.0], got {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"{name} needs 3 values (R,G,B), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std!r}")
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))

    @property
    def resize(self) -> int:
        """Length of the shorter side after resizing, before the centre crop."""
        return max(self.size, int(math.floor(self.size / self.crop_pct + 1e-6)))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def mean255(self) -> tuple[float, float, float]:
        """The mean on the 0..255 pixel scale: what the runtime, the ONNX graph and training subtract from pixels."""
        r, g, b = (m * 255.0 for m in self.mean)
        return r, g, b

    @property
    def inv_std255(self) -> tuple[float, float, float]:
        """1 / (255 * std): (pixel - mean255) * inv_std255 is the normalized input."""
        r, g, b = (1.0 / (s * 255.0) for s in self.std)
        return r, g, b

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; known: {sorted(known)}")
        kwargs = dict(data)
        for key in ("labels", "mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        return cls.from_dict(json.loads(text))


def parse_rgb(text: str) -> tuple[float, float, float]:
    """``"0.485,0.456,0.406"`` -> a per-channel triple; ValueError names the value and the expected form."""
    try:
        items = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not three comma-separated numbers, e.g. 0.5,0.5,0.5") from None
    if len(items) != 3:
        raise ValueError(f"{text!r}: give three values (R,G,B), e.g. 0.5,0.5,0.5")
    return items
