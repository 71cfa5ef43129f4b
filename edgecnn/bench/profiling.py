"""Where the work and the time go: MACs read from the ONNX graph, onnxruntime's operator profile, cold
starts, and the machine a report was measured on.

profile_operators and cold_starts run their measurement (operator_profile, cold_start below) in a fresh
``python -m edgecnn.bench.worker`` process.
"""

from __future__ import annotations

import math
import os
import platform
from typing import Any

from .protocol import run_job


def onnx_macs(path: str | os.PathLike) -> int | None:
    """Multiply-accumulates of one image through the Conv/Gemm/MatMul nodes of an ONNX model; None without onnx.

    Counts QDQ models (their Conv nodes stay Conv) and QLinearConv/QLinearMatMul models alike.
    """
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None  # the base install has no onnx: the column stays empty unless the model carries edgecnn.macs
    model = shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]  # symbolic (batch) -> 1
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in graph.node:
        ins = list(node.input)
        if node.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            w = ins[3] if node.op_type == "QLinearConv" else ins[1]
            out, wshape = shapes.get(node.output[0]), shapes.get(w)
            if not out or not wshape:
                return None
            total += math.prod(out) * math.prod(wshape[1:])  # every output element: C_in/groups x kh x kw MACs
        elif node.op_type in ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger"):
            a = ins[0]
            out, ashape = shapes.get(node.output[0]), shapes.get(a)
            if not out or not ashape:
                return None
            transposed = node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)
            total += math.prod(out) * (ashape[0] if transposed else ashape[-1])
    return total or None


def operator_profile(model: str, threads: int, batch: int, runs: int, device: str) -> dict[str, Any]:
    """In the worker: onnxruntime's profiler over ``runs`` runs after a warm-up, kernel time summed per op type.

    Returns {"ops": {op: [microseconds, distinct nodes]}, "run_us": session.run time, "runs": runs seen}.
    """
    import json
    import tempfile

    import numpy as np
    import onnxruntime as ort

    from edgecnn.runtime.session import providers_for, session_options

    opts = session_options(threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(model, opts, providers=providers_for(device))
    inp = session.get_inputs()[0]
    shape = [batch, *inp.shape[1:]]
    x = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8 if inp.type == "tensor(uint8)" else np.float32)
    warm = 20
    for _ in range(warm + runs):
        session.run(None, {inp.name: x})
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    cut = runs_seen[warm]["ts"] if len(runs_seen) > warm else 0
    ops: dict[str, tuple[int, set[str]]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= cut:
            op = e.get("args", {}).get("op_name", "?")
            total, nodes = ops.get(op, (0, set()))
            nodes.add(e["name"])
            ops[op] = (total + e["dur"], nodes)
    total_run = sum(e["dur"] for e in runs_seen[warm:])
    return {"ops": {k: [v[0], len(v[1])] for k, v in ops.items()}, "run_us": total_run, "runs": len(runs_seen) - warm}


def profile_operators(model: str | os.PathLike, *, threads: int = 1, batch: int = 1, runs: int = 200,
                      device: str = "cpu") -> list[dict[str, Any]]:
    """Where one model's time goes: onnxruntime's own profiler, summed per operator type after graph optimization.

    Returns [{"op": "QLinearConv", "ms_per_run": 0.12, "share": 0.61, "nodes": 9}, ...], largest first.
    Runs in a worker process so that the profile file and its threads leave nothing behind here.
    """
    data = run_job("profile", [os.fspath(model), str(threads), str(batch), str(runs), device],
                   what=f"profiling {model}", timeout=300)
    n = max(1, data["runs"])
    kernel_total = sum(us for us, _ in data["ops"].values()) or 1
    out: list[dict[str, Any]] = [{"op": op, "ms_per_run": us / n / 1e3, "share": us / kernel_total, "nodes": nodes}
                                 for op, (us, nodes) in data["ops"].items()]
    out.sort(key=lambda r: -r["ms_per_run"])
    if data["run_us"]:  # what the kernels do not account for: session.run overhead, copies, thread hand-offs
        out.append({"op": "(outside kernels)", "ms_per_run": max(0.0, data["run_us"] - kernel_total) / n / 1e3,
                    "share": None, "nodes": 0})
    return out


def cold_start(model: str, device: str, threads: int | None) -> dict[str, float]:
    """In a fresh worker: the seconds of ``import edgecnn.runtime``, then of ``create_session``."""
    import time

    t0 = time.perf_counter()
    import edgecnn.runtime  # noqa: F401  (timed: this import is what is measured)
    from edgecnn.runtime.session import create_session

    t1 = time.perf_counter()
    create_session(model, device=device, threads=threads)
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "session_s": t2 - t1}


def cold_starts(model: str | os.PathLike, *, repeats: int = 5, device: str = "cpu",
                threads: int | None = 1) -> list[dict[str, float]]:
    """What a device pays before its first image, ``repeats`` times, each in a fresh interpreter.

    Returns [{"import_s": ..., "session_s": ...}, ...]: ``import edgecnn.runtime`` then ``create_session``.
    Interpreter start-up itself is not included. One cold start is a single noisy event; several give a median.
    """
    return [run_job("cold-start", [os.fspath(model), device, str(threads or "none")],
                    what=f"cold start of {model}", timeout=120) for _ in range(repeats)]


def machine_info() -> dict[str, Any]:
    from ..peak import cpu_flags, cpu_model

    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "simd": cpu_flags(),
                            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass  # reported without it; the rows that need it fail with their own message
    try:
        load = os.getloadavg()
        info["load_avg_1m"] = round(load[0], 2)  # a busy machine explains slow rows
    except OSError:
        pass
    return info
