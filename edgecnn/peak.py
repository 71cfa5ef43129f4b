"""This machine's FP32 peak, measured once with a large single-thread matrix product and cached.

    gflops = fp32_peak_gflops()          # e.g. 95.0; cached in ~/.cache/edgecnn/peak.json

The peak is what one core reaches in a well-tuned SGEMM, the practical roof a convolution can hope
for rather than the datasheet's FMA-units x clock figure. Two SGEMMs are timed, each pinned to one
thread in a fresh worker process (``python -m edgecnn.bench.worker probe-sgemm``): numpy's BLAS, and
onnxruntime's own MatMul (MLAS, the kernels the models run on; its one-node model is encoded here by
hand, since the base install has no onnx). The better of the two is the peak.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .bench.protocol import run_job
from .fileio import atomic_write_text
from .runtime.onnx_wire import encode_field as _field  # the runtime's protobuf codec, shared

SIZE = 512  # 0.27 GFLOP, ~3 ms: long enough to hide call overhead, short enough that some runs get a core alone
REPEATS = 60

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: platform.processor() below is the best we have
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions that matter to convolution kernels (x86 only; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "edgecnn" / "peak.json"


def _key() -> str:
    import onnxruntime as ort  # part of the key: a new build may bring a new BLAS/MLAS, and the cache should notice

    return f"{cpu_model()}|numpy {np.__version__}|onnxruntime {ort.__version__}|{platform.machine()}"


# ----------------------------------------------------------------- a one-node ONNX model, by hand
def matmul_model(n: int) -> bytes:
    """ModelProto bytes of Y = MatMul(A, B), all float32 [n, n], opset 13 (field numbers from onnx.proto)."""

    def value_info(name: str) -> bytes:
        dims = b"".join(_field(1, _field(1, n)) for _ in range(2))  # TensorShapeProto.dim.dim_value
        tensor = _field(1, 1) + _field(2, dims)  # TypeProto.Tensor: elem_type FLOAT, shape
        return _field(1, name) + _field(2, _field(1, tensor))  # ValueInfoProto: name, type.tensor_type

    node = _field(1, "A") + _field(1, "B") + _field(2, "Y") + _field(4, "MatMul")
    graph = _field(1, node) + _field(2, "peak") + _field(11, value_info("A")) + _field(11, value_info("B")) + _field(12, value_info("Y"))
    return _field(1, 8) + _field(8, _field(2, 13)) + _field(7, graph)  # ir_version 8, opset_import {version 13}, graph


def _best_of(product: Callable[[], object], n: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` timed products, after two to warm the caches and the BLAS; 2 n^3 FLOPs each."""
    for _ in range(2):
        product()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t)
    return {"seconds": best, "gflops": 2 * n**3 / best / 1e9}


def sgemm_numpy(n: int, repeats: int) -> dict[str, float]:
    """In a one-thread worker: an n x n float32 product through numpy's BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    return _best_of(lambda: np.matmul(a, b, out=out), n, repeats)


def sgemm_onnxruntime(n: int, repeats: int) -> dict[str, float]:
    """In a worker: the same product through onnxruntime's MatMul (MLAS), one intra-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(matmul_model(n), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"A": rng.standard_normal((n, n), dtype=np.float32), "B": rng.standard_normal((n, n), dtype=np.float32)}
    return _best_of(lambda: session.run(None, feed), n, repeats)


def _probe(job: str, size: int, repeats: int, timeout: float) -> float:
    # The BLAS reads its thread count when it loads: pinned in the worker's environment, before numpy starts.
    env = dict(os.environ, **{v: "1" for v in _THREAD_VARS})
    result = run_job(job, [str(size), str(repeats)], what="the FP32 peak probe", timeout=timeout, env=env)
    return float(result["gflops"])


def measure_peak_gflops(*, size: int = SIZE, repeats: int = REPEATS, timeout: float = 120.0) -> dict[str, float]:
    """Single-thread SGEMM GFLOP/s (2 * n^3 / best time) of numpy's BLAS and onnxruntime's MLAS, each in a subprocess."""
    return {"numpy": _probe("probe-sgemm", size, repeats, timeout),
            "onnxruntime": _probe("probe-ort-sgemm", size, repeats, timeout)}


def fp32_peak_gflops(*, refresh: bool = False, cache_file: Path | None = None,
                     on_measure: Callable[[], None] | None = None) -> float:
    """The cached single-thread FP32 peak for this machine; measured (a few seconds) on first use or with ``refresh``.

    The cache keeps the best figure ever measured: a busy neighbour can only make a probe slower, so the
    maximum is the closest to the machine's real roof, and ``refresh`` can only improve it.
    """
    path = cache_file or _cache_file()
    key = _key()
    cached: dict = {}
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}  # a damaged cache is re-measured, never trusted
    entry = cached.get(key)
    known = float(entry["gflops"]) if isinstance(entry, dict) and isinstance(entry.get("gflops"), (int, float)) else None
    if known is not None and not refresh:
        return known
    if on_measure is not None:  # only a real measurement is worth a progress line
        on_measure()
    probes = measure_peak_gflops()
    gflops = max(*probes.values(), known or 0.0)
    cached[key] = {"gflops": gflops, "last_probes": probes,
                   "method": f"SGEMM {SIZE}x{SIZE}, 1 thread, best of {REPEATS}, numpy and onnxruntime; best ever kept"}
    try:
        atomic_write_text(path, json.dumps(cached, indent=1))
    except OSError:
        pass  # a read-only home still gets the figure, just not cached
    return gflops
