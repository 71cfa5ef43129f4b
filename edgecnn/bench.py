"""Latency, throughput, memory and efficiency of models, side by side: the library behind `edgecnn bench`.

    report = bench(["model.onnx", "model.int8.onnx"], batches=[1, 8], threads=[1, 2], seconds=2)
    print(format_table(report)); report.to_dict()["rows"][0]["p50_ms"]

Every configuration (model x batch x threads, plus PyTorch and end-to-end rows when asked) runs in its
own worker process, so that its peak memory is its own and a crash or a slow torch.compile ends only
that row. The workers stay alive together and are driven round-robin, a slice of runs each per round,
so that machine drift (a neighbour's job, thermal throttling) hits every row alike.

Importing this module imports neither torch nor onnxruntime nor numpy: the workers import what their
row needs, and the runtime's own import time is measured there, in a fresh interpreter.
"""

from __future__ import annotations

import json
import math
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Clock = Callable[[], float]

KIND_MODEL = "model"  # one session.run / forward on a random input of the model's shape
KIND_CLASSIFY = "classify-images"  # files -> decode, preprocess, infer, softmax: the `classify images` code
KIND_NAIVE = "naive-loop"  # the loop a user would write first: open, convert, resize, run, one at a time
META_MACS = "edgecnn.macs"  # optional metadata key: multiply-accumulates of one image at the model's size

DEFAULT_SECONDS = 2.0  # measured time per row when neither runs nor seconds is given
ROUNDS = 10  # each row's runs are split into this many slices, taken in turn with the other rows
MIN_RUNS = 3
WARMUP_BUDGET_S = 1.0  # warm-up ends after `warmup` runs or this much run time, whichever comes first
COMPILE_TIMEOUT_S = 180.0  # torch.compile on a small CPU can take minutes; beyond this the row says so


class BenchError(ValueError):
    """Bad bench input (a missing model, an option out of range); the message names it and the fix."""


class WorkerError(RuntimeError):
    """One row's worker failed; the row is reported as unavailable with this reason."""


@dataclass
class BenchRow:
    """One configuration's measurements. Times in milliseconds; None where not measured or not applicable."""

    model: str  # path as given (the checkpoint for torch rows)
    backend: str  # onnxruntime | torch
    precision: str  # fp32 | int8 | ... from the model's metadata; "unknown" without it
    batch: int  # images per run (for classify-images: the batch size of the pipeline)
    threads: int
    kind: str = KIND_MODEL
    variant: str = ""  # torch: eager | compile
    device: str = "cpu"
    runs: int = 0  # measured runs (for classify-images and naive-loop: passes over the images)
    images: int | None = None  # images per pass (end-to-end rows)
    import_ms: float | None = None  # cold `import edgecnn.runtime` (or torch) in a fresh interpreter
    init_ms: float | None = None  # session creation / checkpoint load (+ compile setup)
    first_ms: float | None = None  # the first run after creation (lazy allocation, torch.compile's compile)
    min_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    throughput_ips: float | None = None  # images per second
    peak_rss_mb: float | None = None  # peak resident memory of the process that ran this row
    rss_scope: str = "row"  # row: its own worker process; process-so-far: shared in-process measurement
    macs: int | None = None  # multiply-accumulates per image
    gflops: float | None = None  # 2 * macs * batch / p50
    peak_fraction: float | None = None  # gflops / (measured single-thread FP32 peak x threads)
    stages_ms: dict[str, float] | None = None  # end-to-end rows: ms per image in each stage
    note: str = ""  # "unavailable: reason" when the row could not run

    @property
    def label(self) -> str:
        return self.named(Path(self.model).name)

    def named(self, name: str) -> str:
        """The row's label with ``name`` in place of the model's file name."""
        what = {KIND_MODEL: self.variant or self.backend, KIND_CLASSIFY: "classify", KIND_NAIVE: "naive"}[self.kind]
        return f"{name} {what} {self.precision} b{self.batch} t{self.threads}"


@dataclass
class BenchReport:
    rows: list[BenchRow]
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    peak_gflops: float | None = None  # single-thread FP32 SGEMM

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "machine": self.machine, "settings": self.settings,
                "peak_gflops": self.peak_gflops}


# ------------------------------------------------------------------------------------------ arithmetic
def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method); ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(seconds: Sequence[float], images_per_run: int) -> dict[str, float]:
    """Latency distribution in ms of runs that took ``seconds`` each, and images/s at the mean."""
    if not seconds:
        raise ValueError("no runs to summarize")
    ms = [s * 1e3 for s in seconds]
    mean = sum(ms) / len(ms)
    std = math.sqrt(sum((v - mean) ** 2 for v in ms) / len(ms))
    return {
        "min_ms": min(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99),
        "max_ms": max(ms), "mean_ms": mean, "std_ms": std,
        "throughput_ips": images_per_run / (mean / 1e3) if mean > 0 else float("inf"),
    }


def efficiency(macs: int | None, batch: int, latency_ms: float | None, *, peak_gflops: float | None,
               threads: int = 1) -> tuple[float | None, float | None]:
    """(GFLOP/s, fraction of peak): one MAC is two FLOPs; the peak scales with the cores the row may use."""
    if not macs or not latency_ms or latency_ms <= 0:
        return None, None
    gflops = 2 * macs * batch / (latency_ms / 1e3) / 1e9
    cores = max(1, min(threads, os.cpu_count() or 1))
    return gflops, (gflops / (peak_gflops * cores) if peak_gflops else None)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass  # not Linux: fall back to getrusage below
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


# --------------------------------------------------------------------------------------------- runners
# A runner holds one configuration: setup() once, then run(n) any number of times, each returning the
# seconds of every run. Runners live in the worker process (or in this one with isolate=False).
class _OrtRunner:
    def __init__(self, cfg: dict[str, Any], clock: Clock):
        self.cfg, self.clock = cfg, clock

    def setup(self) -> dict[str, Any]:
        t0 = self.clock()
        import numpy as np

        import edgecnn.runtime  # noqa: F401  (timed: what a device pays before its first image)
        from edgecnn.runtime.session import create_session
        from edgecnn.runtime.spec import META_PRECISION

        t1 = self.clock()
        self.session, used = create_session(self.cfg["model"], device=self.cfg["device"], threads=self.cfg["threads"])
        t2 = self.clock()
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise WorkerError(f"{self.cfg['model']}: expected one input, found {len(inputs)}")
        spec = inputs[0]
        shape = [self.cfg["batch"] if i == 0 else d for i, d in enumerate(spec.shape)]
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise WorkerError(f"{self.cfg['model']}: input shape {spec.shape} has dynamic dimensions other than the batch")
        if isinstance(spec.shape[0], int) and spec.shape[0] != self.cfg["batch"]:
            raise WorkerError(f"the model's batch is fixed at {spec.shape[0]}; ask for --batch {spec.shape[0]}")
        rng = np.random.default_rng(0)
        if spec.type == "tensor(uint8)":
            x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif spec.type in ("tensor(float)", "tensor(float16)"):
            x = rng.standard_normal(shape).astype(np.float32 if spec.type == "tensor(float)" else np.float16)
        else:
            raise WorkerError(f"{self.cfg['model']}: input type {spec.type} is not an image input")
        self.feed = {spec.name: x}
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        macs = meta.get(META_MACS)
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": used,
                "precision": meta.get(META_PRECISION, "unknown"), "macs": int(macs) if macs else None}

    def run(self, n: int) -> list[float]:
        out, run, feed, clock = [], self.session.run, self.feed, self.clock
        for _ in range(n):
            t = clock()
            run(None, feed)
            out.append(clock() - t)
        return out

    def extra(self) -> dict[str, Any]:
        return {}


class _TorchRunner:
    def __init__(self, cfg: dict[str, Any], clock: Clock):
        self.cfg, self.clock = cfg, clock

    def setup(self) -> dict[str, Any]:
        t0 = self.clock()
        import torch

        from .checkpoint import load_checkpoint
        from .models import count_macs
        from .train import pixels_to_tensor

        t1 = self.clock()
        torch.set_num_threads(self.cfg["threads"])
        device = torch.device("cuda" if self.cfg["device"] == "cuda" else "cpu")
        ckpt = load_checkpoint(self.cfg["model"])
        spec = ckpt.spec
        model = ckpt.build_model().to(device)
        macs = count_macs(model, spec.size)
        if self.cfg["variant"] == "compile":
            model = torch.compile(model)  # compiles lazily: the first run pays for it, and says so in first_ms
        t2 = self.clock()
        gen = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (self.cfg["batch"], spec.size, spec.size, 3), dtype=torch.uint8, generator=gen)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        # The same work as the ONNX graph: uint8 NHWC pixels in, normalization, the network, softmax out.
        @torch.inference_mode()
        def forward() -> None:
            model(pixels_to_tensor(pixels, spec, device)).softmax(dim=1)
            sync()

        self.forward = forward
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": device.type, "precision": "fp32",
                "macs": int(macs)}

    def run(self, n: int) -> list[float]:
        out, forward, clock = [], self.forward, self.clock
        for _ in range(n):
            t = clock()
            forward()
            out.append(clock() - t)
        return out

    def extra(self) -> dict[str, Any]:
        return {}


class _ClassifyRunner:
    """A pass over the image files through Classifier.classify_paths, the code of `classify images`."""

    def __init__(self, cfg: dict[str, Any], clock: Clock):
        self.cfg, self.clock = cfg, clock

    def setup(self) -> dict[str, Any]:
        t0 = self.clock()
        from edgecnn.runtime.classifier import Classifier, StageTimes

        t1 = self.clock()
        self.classifier = Classifier(self.cfg["model"], device=self.cfg["device"], threads=self.cfg["threads"])
        t2 = self.clock()
        self.paths = self.cfg["paths"]
        self.stage_type = StageTimes
        self.totals = StageTimes()
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": self.classifier.device,
                "precision": self.classifier.precision, "macs": None, "images": len(self.paths)}

    def run(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            stages = self.stage_type()
            t = self.clock()
            for result in self.classifier.classify_paths(self.paths, batch_size=self.cfg["batch"],
                                                         workers=self.cfg["threads"], top_k=5, timings=stages):
                if not result.ok:
                    raise WorkerError(f"classify images failed on {result.path}: {result.error}")
            out.append(self.clock() - t)
            for name in ("images", "decode_s", "wait_s", "infer_s", "post_s", "wall_s"):
                setattr(self.totals, name, getattr(self.totals, name) + getattr(stages, name))
        return out

    def extra(self) -> dict[str, Any]:
        t = self.totals
        if not t.images:
            return {}
        per = 1e3 / t.images
        # decode is summed over the worker threads (CPU time spent), the rest is the inference loop's wall time.
        return {"stages_ms": {"decode+preprocess (all threads)": t.decode_s * per, "wait for decode": t.wait_s * per,
                              "infer": t.infer_s * per, "softmax+top-k": t.post_s * per, "wall": t.wall_s * per}}


class _NaiveRunner:
    """The baseline: open, convert, resize, run one image at a time; no draft decode, no batching, no overlap.

    The resize and crop are the runtime's own, so that the naive loop gives the same answers.
    """

    def __init__(self, cfg: dict[str, Any], clock: Clock):
        self.cfg, self.clock = cfg, clock

    def setup(self) -> dict[str, Any]:
        t0 = self.clock()
        import numpy as np
        from PIL import Image

        from edgecnn.runtime.classifier import Classifier
        from edgecnn.runtime.preprocess import resize_and_crop

        t1 = self.clock()
        clf = Classifier(self.cfg["model"], device=self.cfg["device"], threads=self.cfg["threads"])
        t2 = self.clock()

        def one(path: str) -> None:
            with Image.open(path) as im:
                pixels = np.asarray(resize_and_crop(im.convert("RGB"), clf.spec), dtype=np.uint8)[None]
            int(clf.predict_pixels(pixels)[0].argmax())

        self.one, self.paths = one, self.cfg["paths"]
        return {"import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "device": clf.device,
                "precision": clf.precision, "macs": None, "images": len(self.paths)}

    def run(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = self.clock()
            for path in self.paths:
                self.one(path)
            out.append(self.clock() - t)
        return out

    def extra(self) -> dict[str, Any]:
        return {}


_RUNNERS = {("onnxruntime", KIND_MODEL): _OrtRunner, ("torch", KIND_MODEL): _TorchRunner,
            ("onnxruntime", KIND_CLASSIFY): _ClassifyRunner, ("onnxruntime", KIND_NAIVE): _NaiveRunner}


def _make_runner(cfg: dict[str, Any], clock: Clock):
    return _RUNNERS[(cfg["backend"], cfg["kind"])](cfg, clock)


# ------------------------------------------------------------------------------- in-process / worker
class _Local:
    """A runner in this process (isolate=False): deterministic with an injected clock; memory is shared."""

    scope = "process-so-far"

    def __init__(self, cfg: dict[str, Any], clock: Clock):
        self.runner = _make_runner(cfg, clock)

    def call(self, op: str, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return _dispatch(self.runner, op, kw)

    def close(self) -> None:
        self.runner = None


class _Remote:
    """A runner in its own `python -m edgecnn.bench --worker` process, spoken to in JSON lines."""

    scope = "row"

    def __init__(self, cfg: dict[str, Any], clock: Clock):
        del clock  # the worker times with its own perf_counter
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgecnn.bench", "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        # The configuration is the first line on stdin, not an argument: a folder's image list can outgrow ARG_MAX.
        self.proc.stdin.write(json.dumps(cfg) + "\n")  # type: ignore[union-attr]

    def call(self, op: str, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self._died()) from None
        if not self.selector.select(timeout):
            self.close()
            raise WorkerError(f"no answer within {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def _died(self) -> str:
        self.proc.wait(timeout=10)
        self.stderr.seek(0)
        tail = [ln for ln in self.stderr.read().strip().splitlines() if ln.strip()]
        return f"worker exited with code {self.proc.returncode}: {tail[-1] if tail else 'no message'}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.selector.close()
        self.stderr.close()


def _dispatch(runner: Any, op: str, kw: dict[str, Any]) -> dict[str, Any]:
    if op == "setup":
        return runner.setup()
    if op == "run":
        return {"seconds": runner.run(int(kw["n"]))}
    if op == "finish":
        return {"peak_rss_mb": peak_rss_mb(), **runner.extra()}
    raise ValueError(f"unknown worker op {op!r}")


def _worker_main() -> None:
    # The protocol owns the real stdout; anything a library prints goes to stderr instead of corrupting it.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    runner = _make_runner(json.loads(sys.stdin.readline()), time.perf_counter)
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        if op == "quit":
            break
        try:
            reply = _dispatch(runner, op, msg)
        except Exception as exc:  # reported to the parent, which marks the row unavailable with this reason
            text = str(exc).strip().splitlines()
            reply = {"error": f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")}
        proto.write(json.dumps(reply) + "\n")


# ------------------------------------------------------------------------------------------ the bench
def _configs(models: Sequence[str], batches: Sequence[int], threads: Sequence[int], device: str,
             torch_checkpoints: Sequence[str], torch_compile: bool, image_paths: list[str] | None,
             images_batch: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in batches:
        for t in threads:
            for m in models:
                out.append({"model": m, "backend": "onnxruntime", "kind": KIND_MODEL, "variant": "", "batch": b,
                            "threads": t, "device": device})
            for ckpt in torch_checkpoints:
                for variant in ("eager", "compile") if torch_compile else ("eager",):
                    out.append({"model": ckpt, "backend": "torch", "kind": KIND_MODEL, "variant": variant,
                                "batch": b, "threads": t, "device": device})
    if image_paths:
        for t in threads:
            for m in models:
                out.append({"model": m, "backend": "onnxruntime", "kind": KIND_CLASSIFY, "variant": "",
                            "batch": images_batch, "threads": t, "device": device, "paths": image_paths})
            out.append({"model": models[0], "backend": "onnxruntime", "kind": KIND_NAIVE, "variant": "", "batch": 1,
                        "threads": t, "device": device, "paths": image_paths})
    return out


def _image_paths(images_dir: str | os.PathLike, limit: int | None) -> list[str]:
    from edgecnn.runtime.preprocess import is_image_file

    root = Path(images_dir)
    if not root.is_dir():
        raise BenchError(f"{root}: not a folder of images; give --images DIR")
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise BenchError(f"{root}: no image files found (looked for jpg, png, ... recursively)")
    return paths[:limit] if limit else paths


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
            k = ashape[0] if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute) else ashape[-1]
            total += math.prod(out) * k
    return total or None


def profile_operators(model: str | os.PathLike, *, threads: int = 1, batch: int = 1, runs: int = 200,
                      device: str = "cpu") -> list[dict[str, Any]]:
    """Where one model's time goes: onnxruntime's own profiler, summed per operator type after graph optimization.

    Returns [{"op": "QLinearConv", "ms_per_run": 0.12, "share": 0.61, "nodes": 9}, ...], largest first.
    Runs in a worker process so that the profile file and its threads leave nothing behind here.
    """
    code = """
import json, os, sys, tempfile, numpy as np, onnxruntime as ort
from edgecnn.runtime.session import providers_for, session_options
model, threads, batch, runs, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
opts = session_options(threads)
opts.enable_profiling = True
opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
s = ort.InferenceSession(model, opts, providers=providers_for(device))
i = s.get_inputs()[0]
shape = [batch] + list(i.shape[1:])
x = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8 if i.type == "tensor(uint8)" else np.float32)
warm = 20
for _ in range(warm + runs):
    s.run(None, {i.name: x})
path = s.end_profiling()
events = json.load(open(path))
os.remove(path)
runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
cut = runs_seen[warm]["ts"] if len(runs_seen) > warm else 0
ops = {}
for e in events:
    if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= cut:
        op = e.get("args", {}).get("op_name", "?")
        total, nodes = ops.get(op, (0, set()))
        nodes.add(e["name"])
        ops[op] = (total + e["dur"], nodes)
total_run = sum(e["dur"] for e in runs_seen[warm:])
print(json.dumps({"ops": {k: [v[0], len(v[1])] for k, v in ops.items()}, "run_us": total_run, "runs": len(runs_seen) - warm}))
"""
    done = subprocess.run([sys.executable, "-c", code, os.fspath(model), str(threads), str(batch), str(runs), device],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise WorkerError(f"profiling {model} failed: {tail}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    n = max(1, data["runs"])
    kernel_total = sum(us for us, _ in data["ops"].values()) or 1
    out = [{"op": op, "ms_per_run": us / n / 1e3, "share": us / kernel_total, "nodes": nodes}
           for op, (us, nodes) in data["ops"].items()]
    out.sort(key=lambda r: -r["ms_per_run"])
    if data["run_us"]:  # what the kernels do not account for: session.run overhead, copies, thread hand-offs
        out.append({"op": "(outside kernels)", "ms_per_run": max(0.0, data["run_us"] - kernel_total) / n / 1e3,
                    "share": None, "nodes": 0})
    return out


def cold_starts(model: str | os.PathLike, *, repeats: int = 5, device: str = "cpu",
                threads: int | None = 1) -> list[dict[str, float]]:
    """What a device pays before its first image, ``repeats`` times, each in a fresh interpreter.

    Returns [{"import_s": ..., "session_s": ...}, ...]: ``import edgecnn.runtime`` then ``create_session``.
    Interpreter start-up itself is not included. One cold start is a single noisy event; several give a median.
    """
    code = """
import json, sys, time
t0 = time.perf_counter()
import edgecnn.runtime
from edgecnn.runtime.session import create_session
t1 = time.perf_counter()
create_session(sys.argv[1], device=sys.argv[2], threads=None if sys.argv[3] == "none" else int(sys.argv[3]))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "session_s": t2 - t1}))
"""
    out = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", code, os.fspath(model), device, str(threads or "none")],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise WorkerError(f"cold start of {model} failed: {tail}")
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def machine_info() -> dict[str, Any]:
    from .peak import cpu_flags, cpu_model

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


def bench(
    models: Sequence[str | os.PathLike],
    *,
    batches: Sequence[int] = (1,),
    threads: Sequence[int] = (1,),
    warmup: int = 10,
    runs: int | None = None,
    seconds: float | None = None,
    torch_checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    torch_compile: bool = True,
    compile_timeout: float = COMPILE_TIMEOUT_S,
    images_dir: str | os.PathLike | None = None,
    images_limit: int | None = None,
    images_batch: int = 16,
    device: str = "cpu",
    isolate: bool = True,
    peak_gflops: float | None = None,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure every model x batch x threads (plus torch and end-to-end rows when asked), interleaved.

    ``torch_checkpoint`` (one path or several) adds PyTorch rows: eager, and torch.compile unless
    ``torch_compile`` is False (a compile that fails or outlasts ``compile_timeout`` is reported, not raised).
    ``runs`` fixes the measured runs per row; ``seconds`` sets a time budget per row instead (default 2 s).
    ``isolate`` runs each row in its own process (honest per-row memory); ``False`` runs them here, with
    ``clock`` for the timings, which makes the arithmetic testable. ``peak_gflops`` None measures (cached).
    """
    models = [os.fspath(m) for m in models]
    for m in models:
        if not Path(m).is_file():
            raise BenchError(f"{m}: no such model file")
    if runs is not None and seconds is not None:
        raise BenchError("give runs or seconds, not both")
    if runs is not None and runs < 1:
        raise BenchError(f"runs must be >= 1, got {runs}")
    if seconds is not None and seconds <= 0:
        raise BenchError(f"seconds must be > 0, got {seconds}")
    if warmup < 0:
        raise BenchError(f"warmup must be >= 0, got {warmup}")
    for name, values in (("batch", batches), ("threads", threads)):
        if not values or any(int(v) < 1 for v in values):
            raise BenchError(f"{name} values must be integers >= 1, got {list(values)}")
    if device not in ("cpu", "cuda", "auto"):
        raise BenchError(f"device must be cpu, cuda or auto, got {device!r}")
    if torch_checkpoint is None:
        ckpts: list[str] = []
    elif isinstance(torch_checkpoint, (str, os.PathLike)):
        ckpts = [os.fspath(torch_checkpoint)]
    else:
        ckpts = [os.fspath(c) for c in torch_checkpoint]
    for ckpt in ckpts:
        if not Path(ckpt).is_file():
            raise BenchError(f"{ckpt}: no such checkpoint; --torch takes a .pt file written by `edgecnn train`")
    if not models and not ckpts:
        raise BenchError("give at least one .onnx model (or --torch CHECKPOINT)")
    if ckpts:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise BenchError("--torch needs PyTorch, which is not installed: pip install 'edgecnn[train]'")
    if images_dir is not None and not models:
        raise BenchError("--images needs an .onnx model to classify with")
    paths = _image_paths(images_dir, images_limit) if images_dir is not None else None
    if seconds is None and runs is None:
        seconds = DEFAULT_SECONDS
    say = progress or (lambda _msg: None)

    configs = _configs(models, list(batches), list(threads), device, ckpts, torch_compile, paths, images_batch)
    rows = [BenchRow(model=c["model"], backend=c["backend"], precision="fp32" if c["backend"] == "torch" else "unknown",
                     batch=c["batch"], threads=c["threads"], kind=c["kind"], variant=c["variant"], device=device,
                     images=len(paths) if c["kind"] != KIND_MODEL and paths else None) for c in configs]
    handle_type = _Remote if isolate else _Local
    handles: list[Any] = [None] * len(configs)
    times: list[list[float]] = [[] for _ in configs]
    target: list[int] = [0] * len(configs)

    def fail(i: int, exc: BaseException) -> None:
        rows[i].note = f"unavailable: {exc}"
        if handles[i] is not None:
            handles[i].close()
        handles[i] = None
        say(f"  {rows[i].label}: {rows[i].note}")

    try:
        # Setup, first run and warm-up one row at a time: these are single events, not distributions.
        for i, cfg in enumerate(configs):
            say(f"setting up {i + 1}/{len(configs)}: {Path(cfg['model']).name} {cfg['variant'] or cfg['backend']} "
                f"{cfg['kind']} b{cfg['batch']} t{cfg['threads']}")
            slow = cfg["variant"] == "compile"
            try:
                handles[i] = handle_type(cfg, clock)
                info = handles[i].call("setup", timeout=compile_timeout if slow else 300)
                rows[i].precision = info["precision"]
                rows[i].device = info.get("device", device)
                rows[i].import_ms, rows[i].init_ms, rows[i].macs = info["import_ms"], info["init_ms"], info["macs"]
                first = handles[i].call("run", timeout=compile_timeout if slow else 300, n=1)["seconds"]
                per_image = rows[i].images or 1
                rows[i].first_ms = first[0] * 1e3 / per_image if cfg["kind"] != KIND_MODEL else first[0] * 1e3
                # One run per call, so that a pathologically slow row (a thread count fighting its neighbours)
                # stops warming up after WARMUP_BUDGET_S instead of after `warmup` slow runs.
                warm: list[float] = []
                while len(warm) < (warmup if cfg["kind"] == KIND_MODEL else min(warmup, 1)) and sum(warm) < WARMUP_BUDGET_S:
                    warm += handles[i].call("run", timeout=600, n=1)["seconds"]
                estimate = percentile(warm, 50) if warm else first[0]
                target[i] = runs if runs is not None else max(MIN_RUNS, math.ceil(seconds / max(estimate, 1e-7)))
            except WorkerError as exc:
                fail(i, exc)

        # Measure round-robin: each round gives every live row a slice of its runs, the order rotating.
        live = [i for i in range(len(configs)) if handles[i] is not None]
        rounds = min(ROUNDS, max((target[i] for i in live), default=1))
        for r in range(rounds):
            say(f"measuring: round {r + 1}/{rounds}")
            order = live[r % len(live):] + live[: r % len(live)] if live else []
            for i in order:
                if handles[i] is None:
                    continue
                want = math.ceil(target[i] * (r + 1) / rounds) - len(times[i])
                if want <= 0:
                    continue
                try:
                    times[i] += handles[i].call("run", timeout=600, n=want)["seconds"]
                except WorkerError as exc:
                    fail(i, exc)

        if peak_gflops is None:
            from .peak import fp32_peak_gflops

            say("FP32 peak: cached, or measured once (a few seconds)")
            peak_gflops = fp32_peak_gflops()
        for i, cfg in enumerate(configs):
            if handles[i] is None:
                continue
            try:
                extra = handles[i].call("finish", timeout=60)
            except WorkerError as exc:
                fail(i, exc)
                continue
            row = rows[i]
            row.peak_rss_mb, row.rss_scope, row.stages_ms = extra["peak_rss_mb"], handles[i].scope, extra.get("stages_ms")
            row.runs = len(times[i])
            if cfg["kind"] == KIND_MODEL:
                row.__dict__.update(summarize(times[i], row.batch))
            else:  # a pass over the images: latencies per image, amortized over the pass
                row.__dict__.update(summarize([t / row.images for t in times[i]], 1))  # type: ignore[operator]
    finally:
        for h in handles:
            if h is not None:
                h.close()

    counted: dict[str, int | None] = {}
    for r in rows:  # only models that loaded: a broken file already has its reason in the row's note
        if r.backend == "onnxruntime" and r.kind == KIND_MODEL and r.macs is None and r.p50_ms is not None:
            if r.model not in counted:
                counted[r.model] = onnx_macs(r.model)
            r.macs = counted[r.model]
    for r in rows:
        if r.kind == KIND_MODEL and r.p50_ms is not None:
            # The measured peak is this CPU's: a row that ran on a GPU gets GFLOP/s but no share of it.
            cpu_peak = peak_gflops if r.device == "cpu" else None
            r.gflops, r.peak_fraction = efficiency(r.macs, r.batch, r.p50_ms, peak_gflops=cpu_peak, threads=r.threads)
    settings = {"batches": list(batches), "threads": list(threads), "warmup": warmup, "runs": runs, "seconds": seconds,
                "isolate": isolate, "device": device, "rounds": ROUNDS}
    return BenchReport(rows=rows, machine=machine_info(), settings=settings, peak_gflops=peak_gflops)


# ------------------------------------------------------------------------------------------- output
COLUMNS = [  # (header, attribute, format)
    ("model", "label", "{}"), ("init", "init_ms", "{:.1f}"), ("first", "first_ms", "{:.2f}"), ("p50", "p50_ms", "{:.3f}"),
    ("p90", "p90_ms", "{:.3f}"), ("p99", "p99_ms", "{:.3f}"), ("mean", "mean_ms", "{:.3f}"), ("std", "std_ms", "{:.3f}"),
    ("img/s", "throughput_ips", "{:.1f}"), ("MB", "peak_rss_mb", "{:.0f}"), ("GFLOP/s", "gflops", "{:.1f}"),
    ("%peak", "peak_fraction", "{:.0%}"),
]


def _label(row: BenchRow, names: Mapping[str, str] | None) -> str:
    return row.named(names[row.model]) if names and row.model in names else row.label


def table_rows(report: BenchReport, names: Mapping[str, str] | None = None) -> list[list[str]]:
    out = []
    for row in report.rows:
        if row.note:
            out.append([_label(row, names), row.note])
            continue
        cells = []
        for _, attr, fmt in COLUMNS:
            value = _label(row, names) if attr == "label" else getattr(row, attr)
            cells.append("-" if value is None else fmt.format(value))
        out.append(cells)
    return out


def format_table(report: BenchReport, *, markdown: bool = False, names: Mapping[str, str] | None = None) -> str:
    """The readable table: times in ms (end-to-end rows: per image, amortized), memory in MB.

    ``names`` maps a model path to the name shown for it (default: the file name).
    """
    header = [h for h, _, _ in COLUMNS]
    body = table_rows(report, names)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        for cells in body:
            cells = cells + [""] * (len(header) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    widths = [max([len(header[i]), *(len(c[i]) for c in body if len(c) == len(header))]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    for cells in body:
        if len(cells) != len(header):
            lines.append(f"{cells[0].ljust(widths[0])}  {cells[1]}")
        else:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    for row in report.rows:
        if row.stages_ms:
            split = ", ".join(f"{k} {v:.2f}" for k, v in row.stages_ms.items())
            lines.append(f"  {_label(row, names)}: ms per image: {split}")
    return "\n".join(lines)


def chart(report: BenchReport, names: Mapping[str, str] | None = None):
    """bench.png: throughput and p50 latency of every measured row, side by side."""
    from .plot import bar_chart, hstack

    rows = [r for r in report.rows if r.throughput_ips is not None]
    if not rows:
        return None
    labels = [_label(r, names) for r in rows]
    best = max(range(len(rows)), key=lambda i: rows[i].throughput_ips or 0.0)
    left = bar_chart(labels, [r.throughput_ips or 0.0 for r in rows], title="throughput (images/s, higher is better)",
                     highlight=best, value_format="{:.0f}")
    fastest = min(range(len(rows)), key=lambda i: rows[i].p50_ms or float("inf"))
    right = bar_chart(labels, [r.p50_ms or 0.0 for r in rows], title="p50 latency (ms per run, lower is better)",
                      highlight=fastest, value_format="{:.2f}")
    return hstack([left, right])


def write_outputs(report: BenchReport, out_dir: str | os.PathLike, names: Mapping[str, str] | None = None) -> list[Path]:
    """OUT/bench.json and OUT/bench.png, each written atomically."""
    from .fileio import atomic_path, atomic_write_text

    out = Path(out_dir)
    written = [out / "bench.json"]
    atomic_write_text(written[0], json.dumps(report.to_dict(), indent=1))
    image = chart(report, names)
    if image is not None:
        with atomic_path(out / "bench.png") as tmp:
            image.save(tmp, format="PNG")
        written.append(out / "bench.png")
    return written


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_main()
