"""edgecnn: train compact CNN image classifiers, export them to ONNX, quantize to INT8, run them on the edge.

    edgecnn demo                      # the whole pipeline on built-in synthetic data
    import edgecnn; edgecnn.train(...)

Importing this package does not import torch: the library functions load it when they are called.
"""

from __future__ import annotations

import sys
import types
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
# Public functions that share their name with a submodule. Importing the submodule (`from edgecnn.train
# import TrainConfig`) makes the import system set `edgecnn.train` to the module, so the package cannot
# hand out the function under that name; instead the submodule itself is made callable, calling the
# function of its name. `edgecnn.train(...)`, `edgecnn.train.TrainConfig` and `import edgecnn.train as t`
# then all work, in whichever order a notebook runs them.
_CALLABLE_SUBMODULES = frozenset({"train", "evaluate"})


class _CallableModule(types.ModuleType):
    """A submodule that calls its namesake function: ``edgecnn.train(...)`` is ``edgecnn.train.train(...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The edgecnn package: makes a callable of each submodule in _CALLABLE_SUBMODULES as it is bound."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_SUBMODULES and isinstance(value, types.ModuleType):
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_SUBMODULES:
        return import_module(f"{__name__}.{name}")  # the import binds it, callable, on the package
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
__all__ = ["__version__", *_LAZY]
