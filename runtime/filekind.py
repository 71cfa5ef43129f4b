"""What a model file is, from its first bytes: an ONNX model, a PyTorch checkpoint, or something else.

    sniff("runs/shapes/best.pt")        # -> "checkpoint"
    not_onnx_message("best.pt")         # "best.pt: this is a PyTorch checkpoint, not an ONNX model; export it ..."

So that a checkpoint given where an ONNX file is expected (or the reverse) gets a message naming the command
that takes it, instead of a protobuf parser's or an unpickler's complaint. Standard library only.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

ONNX = "onnx"
CHECKPOINT = "checkpoint"
OTHER = "other"
_ONNX_SUFFIXES = (".onnx",)
_PICKLE_PROTOCOLS = range(2, 6)  # torch.save's legacy (non-zip) format opens with a pickle protocol 2+ header


def sniff(path: str | os.PathLike) -> str:
    """CHECKPOINT for torch.save output (a zip holding ``data.pkl``, or a legacy pickle), ONNX for an ONNX
    protobuf (``ModelProto`` opens with field 1, ``ir_version``), OTHER for anything else or an unreadable file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return OTHER
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                return CHECKPOINT if any(n.endswith("data.pkl") for n in zf.namelist()) else OTHER
        except (zipfile.BadZipFile, OSError):
            return OTHER
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return CHECKPOINT
    # Protobuf: tag 0x08 (field 1, varint) then a small ir_version (3 to ~12 in practice), then field 2+.
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] < 0x80 and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42):
        return ONNX
    return OTHER


def not_onnx_message(path: str | os.PathLike, *, name: str | None = None, also: str = "") -> str | None:
    """The message for a PyTorch checkpoint given where an ONNX model is expected; None when it is not one."""
    if sniff(path) != CHECKPOINT:
        return None
    return (f"{name or path}: this is a PyTorch checkpoint, not an ONNX model; export it first: "
            f"edgecnn export {path} -o model.onnx{also}")


def not_checkpoint_message(path: str | os.PathLike) -> str | None:
    """The message for an ONNX model given where a PyTorch checkpoint is expected; None when it is not one."""
    if Path(path).suffix.lower() not in _ONNX_SUFFIXES and sniff(path) != ONNX:
        return None
    return (f"{path}: this is an ONNX model, not a PyTorch checkpoint; give a training run's checkpoint here "
            "(runs/NAME/best.pt); the ONNX file goes as it is to quantize, classify, bench, eval or deploy")
