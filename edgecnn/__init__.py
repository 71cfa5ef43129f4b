"""edgecnn: train compact CNN image classifiers, export them to ONNX, quantize to INT8, run them on the edge.

    edgecnn demo                      # the whole pipeline on built-in synthetic data
    import edgecnn; edgecnn.train(...)

Importing this package does not import torch: the library functions load it when they are called.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public API, resolved lazily so that `import edgecnn` stays light on a device without torch.
_LAZY = {
    "train": "edgecnn.train",
    "TrainConfig": "edgecnn.train",
    "evaluate": "edgecnn.evaluate",
    "synthesize": "edgecnn.synth",
    "create_model": "edgecnn.models",
    "list_models": "edgecnn.models",
    "load_checkpoint": "edgecnn.checkpoint",
    "PreprocessSpec": "edgecnn.runtime.spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
