"""Checkpoints: the weights plus everything the next stage needs to rebuild the model with no flags.

    ckpt = load_checkpoint("runs/shapes/best.pt")
    model = ckpt.build_model()           # eval mode, weights loaded
    ckpt.spec.labels, ckpt.arch

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that
``torch.load(weights_only=True)`` reads it: no pickled classes, nothing executed on load.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fileio import atomic_path
from .runtime.filekind import not_checkpoint_message
from .runtime.spec import PreprocessSpec

if TYPE_CHECKING:
    import torch.nn as nn

FORMAT = "edgecnn.checkpoint/1"
_REQUIRED = ("format", "arch", "model_args", "spec", "state_dict")


class CheckpointError(ValueError):
    """A file that is not a usable edgecnn checkpoint."""


@dataclass
class Checkpoint:
    path: Path
    data: dict[str, Any]

    @property
    def arch(self) -> str:
        return self.data["arch"]

    @property
    def model_args(self) -> dict[str, Any]:
        return dict(self.data["model_args"])

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.data["spec"])

    @property
    def epoch(self) -> int:
        return int(self.data.get("epoch", 0))

    @property
    def init(self) -> dict[str, Any]:
        """Where the run's starting weights came from (edgecnn.transfer.StartingPoint): kind, weights enum name,
        file SHA-256, parent checkpoint. Checkpoints from before it was recorded started from scratch."""
        return dict(self.data.get("init") or {"kind": "scratch"})

    def build_model(self) -> nn.Module:
        from .models import create_model

        model = create_model(self.arch, num_classes=self.spec.num_classes, **self.model_args)
        try:
            model.load_state_dict(self.data["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights do not fit architecture {self.arch!r}: {exc}") from None
        return model.eval()

    def sha256(self) -> str:
        return file_sha256(self.path)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` atomically; a killed process leaves the previous file intact."""
    import torch

    missing = [k for k in _REQUIRED if k not in data]
    assert not missing, f"checkpoint is missing {missing}"
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: str | os.PathLike, *, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``) and check that it is one of ours."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    wrong_kind = not_checkpoint_message(path)  # an exported model.onnx here: say what it is for
    if wrong_kind:
        raise CheckpointError(wrong_kind)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
        # The weights-only unpickler reports foreign files with many exception types (a text file: KeyError).
        text = str(exc)
        if "WeightsUnpickler error:" in text:
            # Keep torch's reason, not its advice to retry with weights_only=False on an untrusted file.
            reason = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        else:
            reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint; refused by the safe (weights-only) loader: {reason}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgecnn checkpoint (expected format {FORMAT!r}); train one with `edgecnn train`")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    try:
        PreprocessSpec.from_dict(data["spec"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad preprocessing spec: {exc}") from None
    return Checkpoint(path, data)
