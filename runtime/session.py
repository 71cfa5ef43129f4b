"""onnxruntime sessions: execution-provider choice (cpu, cuda, auto) and thread settings.

    session, provider = create_session("model.onnx", device="auto", threads=2)
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from .filekind import not_onnx_message

DEVICES = ("auto", "cpu", "cuda")
IN_MEMORY = "<in-memory>"  # how messages and describe() name a model given as bytes


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file and the reason."""


def available_devices() -> list[str]:
    providers = ort.get_available_providers()
    return ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in providers else [])


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device``; ``cuda`` where the GPU build is missing is an error."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not has_cuda:
        raise ValueError(
            "device 'cuda' needs onnxruntime's GPU build (pip install onnxruntime-gpu) and an NVIDIA GPU; "
            f"this onnxruntime {ort.__version__} offers {', '.join(ort.get_available_providers())}; use --device cpu"
        )
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None, *, spin: bool = False,
                    optimized_model_path: str | None = None) -> ort.SessionOptions:
    """onnxruntime options: ``threads`` intra-op threads (None: one per core); ``spin`` lets idle ones busy-wait.

    Spinning is off unless asked for: in an application the model shares the cores with JPEG decoding threads,
    an HTTP server or a camera reader, and onnxruntime's idle threads spinning for the next call took 1.5 ms
    of CPU per image from the decoders in `classify images` (4.4 vs 2.9 ms of CPU per image, 2 cores). Only
    a latency benchmark of the model alone, with more than one thread, turns it on (onnxruntime's default).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if optimized_model_path:
        options.optimized_model_filepath = optimized_model_path
    return options


def create_session(model: str | os.PathLike | bytes, *, device: str = "auto", threads: int | None = None,
                   spin: bool = False, name: str | None = None) -> tuple[ort.InferenceSession, str]:
    """Load ``model`` (a file or its bytes) for ``device``; return the session and the provider actually used.

    Error messages begin with ``name``: by default the file, or ``<in-memory>`` for bytes.
    """
    source: str | bytes
    if isinstance(model, bytes):
        source, name = model, name or IN_MEMORY
    else:
        path = Path(model)
        source, name = str(path), name or str(path)
        if not path.is_file():
            raise ModelError(f"{name}: no such model file")
        wrong_kind = not_onnx_message(path, name=name)  # a best.pt here: say which command takes it
        if wrong_kind:
            raise ModelError(wrong_kind)
    providers = providers_for(device)
    try:
        session = ort.InferenceSession(source, sess_options=session_options(threads, spin=spin), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for every kind of bad file
        text = str(exc).strip().splitlines()
        raise ModelError(f"{name}: not a loadable ONNX model ({text[-1] if text else type(exc).__name__})") from None
    used = session.get_providers()[0]
    if device == "cuda" and used != "CUDAExecutionProvider":
        raise ModelError(f"{name}: the CUDA execution provider failed to start (driver or CUDA libraries missing); use --device cpu")
    return session, ("cuda" if used == "CUDAExecutionProvider" else "cpu")
