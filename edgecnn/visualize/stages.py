"""What a stage is: a top-level feature block of the model, found alike from torch module paths and ONNX weight names.

    stage_blocks(["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1"])   # ['conv1', 'layer1', 'layer2']
    stage_blocks(["features.0.conv", "features.1.conv.0"])                        # ['features.0', 'features.1']

The .pt view passes its Conv2d modules' paths (views.py), the ONNX view its Conv weights' names, which torch's
exporter and the quantizer keep (onnx_graph.py); both get the same blocks, so stage<N> names the same layer in
every format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_FEATURES = re.compile(r"^features\.\d+$")
# A torch parameter name as export keeps it and the quantizer extends it ("layer3.0.conv1.weight_quantized").
_WEIGHT = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*)\.weight(?:_\w+)?$")


def block_of(module: str) -> str:
    """The feature block a module lies in: ``features.<i>`` inside a ``features`` Sequential, else its top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "features" and len(parts) > 1 and parts[1].isdigit() else parts[0]


def weight_module(weight: str) -> str | None:
    """The module path of a torch weight name kept in an ONNX graph; None for a name export made up (``val_12``)."""
    m = _WEIGHT.match(weight)
    return m.group(1) if m else None


def stage_blocks(conv_modules: Iterable[str], classifier: str | None = None) -> list[str]:
    """The stages: the blocks that hold convolutions, in the order of their first one.

    A model with a ``features`` Sequential (every edgecnn family, torchvision's MobileNets and EfficientNet)
    has its children as stages and nothing else; one without (torchvision's ResNet and ShuffleNet) has
    its top-level children, less the classifier (ModelInfo.classifier, e.g. "fc" or "classifier.1").
    """
    blocks = list(dict.fromkeys(block_of(m) for m in conv_modules))
    featured = [b for b in blocks if _FEATURES.match(b)]
    if featured:
        return featured
    head = classifier.split(".")[0] if classifier else None
    return [b for b in blocks if b != head]


def stage_name(index: int) -> str:
    """The name a stage is shown under in every format: stage<N> for the N-th block."""
    return f"stage{index + 1}"


def stage_caption(block: str, index: int, count: int) -> str:
    """``block`` ("features.4", "layer3") is stage index+1 of count: "output of features[4], stage 5 of 17"."""
    label = re.sub(r"\.(\d+)", r"[\1]", block)
    return f"output of {label}, stage {index + 1} of {count}"
