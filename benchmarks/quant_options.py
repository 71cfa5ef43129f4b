"""Which INT8 options to ship: latency (batch 1, 1 thread) and accuracy of each option, FP32 beside them.

    .venv/bin/python benchmarks/quant_options.py --model resnet8=runs/r8/best.pt --data data/shapes

For every checkpoint: the FP32 graph with uint8 input (scale folded into the first convolution, the
default), the same with the Mul kept as a node, and the float-NCHW graph; each quantized with the
default options (U8 activations, S8 per-channel weights, reduce_range, first convolution FP32), and the
default graph with the alternatives (first convolution INT8, no reduce_range, S8S8, per-tensor,
entropy/percentile calibration, dynamic). All sessions are timed in one process, interleaved round by
round after a warm-up; the table gives the median of per-round means, in thread CPU time and wall time. Writes a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def build(ckpt_path: Path, work: Path, data: Path, calib_size: int) -> list[dict]:
    from importlib import import_module

    import onnx

    from edgecnn.checkpoint import load_checkpoint
    from edgecnn.export import graph as G
    from edgecnn.export import onnx_export as E

    Q = import_module("edgecnn.export.quantize")  # the module; edgecnn.export.quantize is also the function

    ckpt = load_checkpoint(ckpt_path)
    spec = ckpt.spec
    folded = E.fold_batchnorm(ckpt.build_model())
    calib, _ = Q.load_pixels(Q.image_files(data / "train", limit=calib_size), spec)
    val, labels = Q.eval_set(data / "val", spec)
    rows = []

    def add(name: str, path: Path, kind: str, precision: str, ref: int | None = None) -> None:
        """``ref``: index of the FP32 row this one is compared with (None: itself)."""
        probs = Q.predict(path, val, spec, kind, threads=1)
        rows.append({"variant": name, "path": path, "kind": kind, "precision": precision,
                     "accuracy": float((probs.argmax(1) == labels).mean()), "probs": probs,
                     "bytes": path.stat().st_size, "ref": len(rows) if ref is None else ref})

    graphs = {}
    for name, kind, fold in [("uint8 in, scale folded (default)", "uint8-nhwc", True),
                             ("uint8 in, Mul kept", "uint8-nhwc", False), ("float NCHW in", "float-nchw", True)]:
        proto = E.build_graph(folded, spec, input=kind, fold_scale=fold)
        G.set_metadata(proto, {"edgecnn.spec": spec.to_json(), "edgecnn.input": kind})
        path = work / f"{len(graphs)}.onnx"
        onnx.save(proto, str(path))
        graphs[name] = (path, kind)
        ref = len(rows)
        add(f"FP32, {name}", path, kind, "fp32")
        out = work / f"{len(graphs)}.int8.onnx"
        Q.static_qdq(path, out, calib, spec, kind, exclude=["post.softmax"])
        add(f"INT8 default, {name}", out, kind, "int8", ref)
    path, kind = graphs["uint8 in, scale folded (default)"]
    options = [("INT8 U8S8 per-channel reduce_range, first conv INT8 too", {"first_conv_fp32": False}),
               ("INT8 U8S8 per-channel, no reduce_range", {"reduce_range": False}),
               ("INT8 S8S8 per-channel", {"activation_type": "QInt8"}),
               ("INT8 U8S8 per-tensor reduce_range", {"per_channel": False}),
               ("INT8 U8S8 per-channel reduce_range, entropy", {"method": "entropy"}),
               ("INT8 U8S8 per-channel reduce_range, percentile", {"method": "percentile"})]
    for i, (name, kw) in enumerate(options):
        out = work / f"opt{i}.onnx"
        Q.static_qdq(path, out, calib, spec, kind, exclude=["post.softmax"], **kw)
        add(f"{name}, uint8 in", out, kind, "int8", 0)
    out = work / "dyn.onnx"
    Q._dynamic(path, out, per_channel=True)
    add("INT8 dynamic (weights only), uint8 in", out, kind, "int8-dynamic", 0)
    out = work / "fp16.onnx"
    onnx.save(Q._fp16(onnx.load(str(path))), str(out))
    add("FP16 (for GPUs), uint8 in", out, kind, "fp16", 0)
    return rows


def time_rows(rows: list[dict], spec_size: int, rounds: int, per_round: int) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, spec_size, spec_size, 3), dtype=np.uint8)
    from edgecnn.runtime.preprocess import normalize
    from edgecnn.runtime.spec import PreprocessSpec

    spec = PreprocessSpec(size=spec_size)
    for row in rows:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(row["path"]), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: pixels if row["kind"] == "uint8-nhwc" else normalize(pixels, spec)}
        for _ in range(50):
            session.run(None, feed)
        row["session"], row["feed"], row["times"], row["cpu"] = session, feed, [], []
    for _ in range(rounds):
        for row in rows:
            session, feed = row["session"], row["feed"]
            start, cpu = time.perf_counter(), time.thread_time()
            for _ in range(per_round):
                session.run(None, feed)
            row["cpu"].append((time.thread_time() - cpu) / per_round * 1e3)
            row["times"].append((time.perf_counter() - start) / per_round * 1e3)
    for row in rows:
        row["ms"], row["cpu_ms"] = float(np.median(row["times"])), float(np.median(row["cpu"]))
        del row["session"], row["feed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT, repeatable")
    parser.add_argument("--data", type=Path, required=True, help="dataset with train/ (calibration) and val/")
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("-o", "--out", type=Path, default=Path(__file__).parent / "results" / "quant_options.md")
    args = parser.parse_args()

    from edgecnn.checkpoint import load_checkpoint
    from edgecnn.fileio import atomic_write_text

    lines = ["# INT8 quantization options", "",
             f"Machine: {platform.machine()} {platform.processor() or ''}, {_cpu_name()}; onnxruntime {_ort_version()}; "
             f"batch 1, 1 thread, median of {args.rounds} interleaved rounds x {args.per_round} runs after 50 warm-up runs; "
             "'CPU ms' is the calling thread's CPU time (onnxruntime runs a 1-thread session on it), robust to "
             f"other processes on a shared machine (load average at start {os.getloadavg()[0]:.1f}); 'wall ms' is elapsed time. "
             f"Calibration: {args.calib_size} images of {args.data}/train; accuracy and agreement on {args.data}/val.", ""]
    for item in args.model:
        name, _, ckpt = item.partition("=")
        size = load_checkpoint(ckpt).spec.size
        with tempfile.TemporaryDirectory() as work:
            rows = build(Path(ckpt), Path(work), args.data, args.calib_size)
            time_rows(rows, size, args.rounds, args.per_round)
        lines += [f"## {name} at {size}x{size} ({ckpt})", "",
                  "| variant | CPU ms | speed-up vs FP32 (CPU time) | wall ms | speed-up (wall) | accuracy "
                  "| top-1 agreement with FP32 | size KiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            ref = rows[row["ref"]]
            agree = float((row["probs"].argmax(1) == ref["probs"].argmax(1)).mean())
            lines.append(f"| {row['variant']} | {row['cpu_ms']:.3f} | {ref['cpu_ms'] / row['cpu_ms']:.2f}x | {row['ms']:.3f} | "
                         f"{ref['ms'] / row['ms']:.2f}x | {row['accuracy']:.3f} | "
                         f"{agree:.3f} | {row['bytes'] / 1024:.0f} |")
        lines.append("")
        print("\n".join(lines[-len(rows) - 3:]), flush=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                vnni = "avx512_vnni" in flags or "avx_vnni" in flags
                return f"{line.split(':', 1)[1].strip()} ({'VNNI' if vnni else 'no VNNI'})"
    except OSError:
        pass
    return "unknown CPU"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
