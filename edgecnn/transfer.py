"""Starting weights (ImageNet, a torchvision .pth, an earlier checkpoint) and the recipe for a handful of images.

    start = load_start(model, "mobilenet_v2", labels, weights="mobilenet_v2-7ebf99e0.pth")
    set_backbone_frozen(model, "mobilenet_v2", True)     # head-only: backbone weights and BatchNorm statistics fixed
    epochs = plan_epochs(None, steps_per_epoch=1, min_steps=DEFAULT_MIN_STEPS)

The constants are importable without torch (the CLI shows them in --help); torch loads inside the functions.
They follow common fine-tuning practice (Keras' and timm's transfer guides); benchmarks/transfer.py has the grid
that measures them (warm-up share, backbone learning rate, minimum steps) and was not yet completed on this
project's shared 2-core machine: revisit them with its results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    import torch.nn as nn

# With epochs not given, a run gets at least this many optimizer steps: 20 images at batch 32 are 1 step per
# epoch, and 30 epochs were 30 steps in all (0.69-0.73 on 4 digits per class; 0.82 after 150 epochs).
DEFAULT_MIN_STEPS = 300
# With starting weights and a new classifier: the share of the steps that trains the classifier alone
# (backbone and its BatchNorm statistics frozen), so that a random head sends no large gradients into it.
DEFAULT_HEAD_WARMUP = 0.2
# With starting weights: the backbone's learning rate as a fraction of the classifier's.
DEFAULT_BACKBONE_LR = 0.1
# Warn about class imbalance when the largest class has this many times the training images of the smallest.
IMBALANCE_RATIO = 3.0
# --pretrained: seconds before a download attempt gives up (offline machines fail at once; a dead proxy would not).
DOWNLOAD_TIMEOUT_S = 15.0

KINDS = ("scratch", "pretrained", "weights", "checkpoint")


class TransferError(ValueError):
    """Starting weights that cannot be used; the message says what did not match and what to do."""


@dataclass(frozen=True)
class StartingPoint:
    """Where a run's initial weights came from: recorded in its checkpoints as ``init``."""

    kind: str = "scratch"  # scratch, pretrained, weights or checkpoint
    weights: str | None = None  # torchvision weights enum member (pretrained), e.g. "ResNet18_Weights.IMAGENET1K_V1"
    sha256: str | None = None  # of the weights file (pretrained: the cached download; weights: the file given)
    parent: dict[str, str] | None = None  # checkpoint: {"path": ..., "sha256": ...}
    new_head: bool = True  # the classifier is freshly initialized for this dataset's classes

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def has_weights(self) -> bool:
        return self.kind != "scratch"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StartingPoint:
        return cls(**data) if data else cls()


def classifier_prefix(arch: str) -> str:
    from .models import model_info

    return model_info(arch).classifier + "."


def is_classifier(name: str, arch: str) -> bool:
    return name.startswith(classifier_prefix(arch))


def named_backbone_parameters(model: nn.Module, arch: str) -> Iterator[tuple[str, torch.nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if not is_classifier(n, arch))


def set_backbone_frozen(model: nn.Module, arch: str, frozen: bool) -> None:
    """Freeze (or free) everything but the classifier: no gradients, and BatchNorm layers in eval mode.

    Call it again after every ``model.train()``, which puts the BatchNorm layers back in training mode:
    a frozen backbone whose running statistics drift on a few images is not frozen.
    """
    import torch.nn as nn

    for _, p in named_backbone_parameters(model, arch):
        p.requires_grad_(not frozen)
    if frozen:
        prefix = classifier_prefix(arch)
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not (name + ".").startswith(prefix):
                module.eval()


def param_groups(model: nn.Module, arch: str, *, lr: float, weight_decay: float,
                 backbone_lr: float = 1.0) -> list[dict[str, Any]]:
    """AdamW/SGD groups: weight decay on weights only (not biases and norms); the backbone at ``backbone_lr * lr``."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        groups.setdefault((is_classifier(name, arch), p.ndim > 1), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr if head else lr * backbone_lr,
             "name": f"{'classifier' if head else 'backbone'}{'' if decay else ' (no decay)'}"}
            for (head, decay), params in sorted(groups.items(), key=lambda kv: kv[0]) if params]


def plan_epochs(epochs: int | None, *, steps_per_epoch: int, min_steps: int, default: int) -> int:
    """``epochs`` when given; otherwise ``default`` raised so that the run takes at least ``min_steps`` steps."""
    if epochs is not None:
        return epochs
    return max(default, math.ceil(min_steps / max(1, steps_per_epoch)))


# --- class balance ---------------------------------------------------------------------------------------------

def class_counts(targets: Sequence[int] | np.ndarray, num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for t in targets:
        counts[t] += 1
    return counts


def imbalance_message(labels: Sequence[str], counts: Sequence[int]) -> str | None:
    """A warning when the largest class has IMBALANCE_RATIO times the training images of the smallest, else None."""
    big = max(range(len(counts)), key=lambda i: counts[i])
    small = min(range(len(counts)), key=lambda i: counts[i])
    if counts[big] < IMBALANCE_RATIO * max(1, counts[small]):
        return None
    return (f"class imbalance: {labels[big]!r} has {counts[big]} training images, {labels[small]!r} {counts[small]} "
            f"({counts[big] / max(1, counts[small]):.1f}x); the model will favour the large classes. Pass --balance "
            "to weight the loss by class, or add images of the small ones")


def class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency loss weights, mean 1 over the images: n / (classes * n_c) (a class with none gets 0)."""
    n, k = sum(counts), len(counts)
    return [n / (k * c) if c else 0.0 for c in counts]


# --- starting weights ------------------------------------------------------------------------------------------

def load_start(model: nn.Module, arch: str, labels: Sequence[str], *, pretrained: bool = False,
               weights: str | os.PathLike | None = None, init: str | os.PathLike | None = None) -> StartingPoint:
    """Load the starting weights into ``model`` (built for ``labels``) and say where they came from.

    ``pretrained``: the architecture's ImageNet weights through torchvision (the torch hub cache, or a download);
    ``weights``: a torchvision-format state_dict file; ``init``: an edgecnn checkpoint of the same architecture,
    whole when its labels are ``labels``, else its backbone under a new classifier.
    """
    given = [k for k, v in (("--pretrained", pretrained), ("--weights", weights), ("--init", init)) if v]
    if len(given) > 1:
        raise TransferError(f"{' and '.join(given)} are alternatives: start from one of them")
    if pretrained:
        state, enum_name, sha = pretrained_state_dict(arch)
        fit_backbone(model, arch, state, source=f"torchvision's {enum_name}")
        return StartingPoint("pretrained", weights=enum_name, sha256=sha)
    if weights:
        from .checkpoint import file_sha256

        state = read_state_dict(weights)
        fit_backbone(model, arch, state, source=str(weights))
        return StartingPoint("weights", sha256=file_sha256(weights))
    if init:
        return _load_checkpoint_start(model, arch, labels, Path(init))
    return StartingPoint()


def _load_checkpoint_start(model: nn.Module, arch: str, labels: Sequence[str], path: Path) -> StartingPoint:
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if ckpt.arch != arch:
        raise TransferError(f"{path} is a {ckpt.arch} checkpoint, but this run trains {arch}; pass --arch {ckpt.arch} "
                            "(or start from a checkpoint of the same architecture)")
    parent = {"path": str(path), "sha256": ckpt.sha256()}
    if tuple(ckpt.spec.labels) == tuple(labels):
        try:
            model.load_state_dict(ckpt.data["state_dict"])
        except RuntimeError as exc:
            raise TransferError(f"{path}: weights do not fit {arch}: {str(exc).strip().splitlines()[0]}") from None
        return StartingPoint("checkpoint", parent=parent, new_head=False)
    fit_backbone(model, arch, ckpt.data["state_dict"], source=str(path))
    return StartingPoint("checkpoint", parent=parent, new_head=True)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision-format state_dict from ``path`` (safe loader); anything else is a TransferError."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise TransferError(f"{path}: no such weights file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, TypeError,
            AttributeError, IndexError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TransferError(f"{path}: not a state_dict file that the safe (weights-only) loader reads: {reason}") from None
    if isinstance(data, dict) and "format" in data and "state_dict" in data:
        raise TransferError(f"{path} is an edgecnn checkpoint, not a torchvision state_dict: start from it with --init")
    for key in ("state_dict", "model"):  # a state_dict saved inside a training dict, as many tools do
        if isinstance(data, dict) and isinstance(data.get(key), dict) and len(data) <= 8:
            data = data[key]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        what = type(data).__name__ if not isinstance(data, dict) else "a dict that does not map names to tensors"
        raise TransferError(f"{path}: not a state_dict (found {what}); give a .pth that holds model.state_dict()")
    return data


def fit_backbone(model: nn.Module, arch: str, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load every non-classifier tensor of ``state`` into ``model``; the classifier keeps its fresh weights.

    Raises TransferError naming the missing and unexpected keys and the shape mismatches, with counts.
    """
    import torch

    own = {k: v for k, v in model.state_dict().items() if not is_classifier(k, arch)}
    theirs = {k: v for k, v in state.items() if not is_classifier(k, arch)}
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(own)} {arch} tensors missing (e.g. {', '.join(missing[:2])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})")
        if shapes:
            parts.append(f"{len(shapes)} of other shape (file vs model, e.g. {'; '.join(shapes[:2])})")
        raise TransferError(f"{source} does not fit {arch}: {'; '.join(parts)}; is it the state_dict of another "
                            "architecture?")
    with torch.no_grad():
        result = model.load_state_dict({k: theirs[k].to(own[k].dtype) for k in own}, strict=False)
    assert all(is_classifier(k, arch) for k in result.missing_keys) and not result.unexpected_keys, result


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps (or would keep) the file downloaded from ``url``: $TORCH_HOME/hub/checkpoints/<name>."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def pretrained_state_dict(arch: str, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> tuple[dict[str, torch.Tensor], str, str]:
    """(state_dict, weights enum name, file SHA-256) of ``arch``'s ImageNet weights: from the torch hub cache,
    else downloaded into it. Offline without the file: a TransferError that names --weights FILE and the URL."""
    import socket
    import urllib.error

    import torch
    import torchvision.models

    from .checkpoint import file_sha256
    from .models import list_models, model_info

    info = model_info(arch)
    if info.weights is None:
        have = [n for n in list_models() if model_info(n).weights]
        raise TransferError(f"{arch} has no pretrained weights; --pretrained works for {', '.join(have)} "
                            "(or start from one of your checkpoints with --init)")
    enum = torchvision.models.get_weight(info.weights)
    cached = hub_checkpoint_path(enum.url)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        state = torch.hub.load_state_dict_from_url(enum.url, progress=False, check_hash=True, map_location="cpu",
                                                   weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:  # URLError and timeouts are OSErrors
        reason = getattr(exc, "reason", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TransferError(f"--pretrained: {arch}'s ImageNet weights are not in the torch hub cache ({cached.parent}) "
                            f"and could not be downloaded ({reason}); on a machine with internet download {enum.url}, "
                            f"copy it here and pass --weights FILE") from None
    finally:
        socket.setdefaulttimeout(previous)
    return state, info.weights, file_sha256(cached) if cached.is_file() else ""
