"""bench(): check the request, set every row up, measure the rows round-robin, summarize them.

Every configuration runs in its own worker process (isolate=True), so that its peak memory is its own and a
crash or a slow torch.compile ends only that row. The workers stay alive together and are driven
round-robin, a slice of runs each per round, so that machine drift (a neighbour's job, thermal throttling)
hits every row alike.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .accuracy import accuracies, check_eval_dir
from .profiling import machine_info, onnx_macs
from .protocol import Handle, Local, Remote
from .rows import (
    KIND_CLASSIFY,
    KIND_MODEL,
    KIND_NAIVE,
    BenchError,
    BenchReport,
    BenchRow,
    Clock,
    RowConfig,
    WorkerError,
)
from .stats import cpu_percent, efficiency, percentile, summarize

DEFAULT_SECONDS = 2.0  # measured time per row when neither runs nor seconds is given
ROUNDS = 10  # each row's runs are split into this many slices, taken in turn with the other rows
MIN_RUNS = 3
WARMUP_BUDGET_S = 1.0  # warm-up ends after `warmup` runs or this much run time, whichever comes first
COMPILE_TIMEOUT_S = 180.0  # torch.compile on a small CPU can take minutes; beyond this the row says so


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
    openvino: bool = False,
    eval_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    isolate: bool = True,
    peak_gflops: float | None = None,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure every model x batch x threads (plus torch and end-to-end rows when asked), interleaved.

    ``torch_checkpoint`` (one path or several) adds PyTorch rows: eager, and torch.compile unless
    ``torch_compile`` is False (a compile that fails or outlasts ``compile_timeout`` is reported, not raised).
    ``openvino`` adds an OpenVINO row (CPU plugin, the file's own precision) next to every onnxruntime model
    row, in the same rounds; without the openvino package those rows say how to install it.
    ``eval_dir`` (class folders, or a dataset root with val/) adds each file's accuracy to its rows, computed
    once per file and backend as `edgecnn eval` computes it (see accuracy.py); a class there that a model does
    not know raises BenchError. It is scored before the timing starts, so that a bad folder costs no minutes.
    ``runs`` fixes the measured runs per row; ``seconds`` sets a time budget per row instead (default 2 s).
    ``isolate`` runs each row in its own process (honest per-row memory); ``False`` runs them here, with
    ``clock`` for the timings, which makes the arithmetic testable. ``peak_gflops`` None measures (cached).
    """
    model_paths = [os.fspath(m) for m in models]
    for m in model_paths:
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
    ckpts = _checkpoints(torch_checkpoint)
    if not model_paths and not ckpts:
        raise BenchError("give at least one .onnx model (or --torch CHECKPOINT)")
    if images_dir is not None and not model_paths:
        raise BenchError("--images needs an .onnx model to classify with")
    paths = _image_paths(images_dir, images_limit) if images_dir is not None else ()
    if eval_dir is not None:
        check_eval_dir(eval_dir)
    budget = seconds if seconds is not None or runs is not None else DEFAULT_SECONDS
    say = progress or (lambda _msg: None)

    configs = _configs(model_paths, list(batches), list(threads), device, ckpts, torch_compile, paths, images_batch,
                       openvino)
    sizes = {m: Path(m).stat().st_size for m in {c.model for c in configs}}
    rows = [BenchRow(model=c.model, backend=c.backend, precision="fp32" if c.backend == "torch" else "unknown",
                     batch=c.batch, threads=c.threads, kind=c.kind, variant=c.variant,
                     device="cpu" if c.backend == "openvino" else device, size_bytes=sizes[c.model],
                     images=len(paths) if c.kind != KIND_MODEL and paths else None) for c in configs]
    if eval_dir is not None:
        # Here, in this process: the workers (isolate=True) start afterwards, with their own imports and memory;
        # in-process rows share it with the scoring as they share it with each other (rss_scope says so).
        scores = accuracies([(c.model, c.backend) for c in configs], eval_dir, device=device, progress=say)
        for row in rows:
            score = scores[(row.model, row.backend)]
            row.accuracy, row.eval_images, row.accuracy_note = score.accuracy, score.images, score.note
    handle_type: type[Local] | type[Remote] = Remote if isolate else Local
    handles: list[Handle | None] = [None] * len(configs)
    times: list[list[float]] = [[] for _ in configs]
    target: list[int] = [0] * len(configs)
    cpu_s, wall_s = [0.0] * len(configs), [0.0] * len(configs)  # the process's, around the measured runs only

    def fail(i: int, exc: BaseException) -> None:
        rows[i].note = f"unavailable: {exc}"
        handle = handles[i]
        if handle is not None:
            handle.close()
        handles[i] = None
        say(f"  {rows[i].label}: {rows[i].note}")

    try:
        # Setup, first run and warm-up one row at a time: these are single events, not distributions.
        for i, cfg in enumerate(configs):
            say(f"setting up {i + 1}/{len(configs)}: {Path(cfg.model).name} {cfg.variant or cfg.backend} "
                f"{cfg.kind} b{cfg.batch} t{cfg.threads}")
            slow = cfg.variant == "compile"
            try:
                worker = handles[i] = handle_type(cfg, clock)
                info = worker.call("setup", timeout=compile_timeout if slow else 300)
                rows[i].precision = info["precision"]
                rows[i].device = info.get("device", device)
                rows[i].import_ms, rows[i].init_ms, rows[i].macs = info["import_ms"], info["init_ms"], info["macs"]
                first = worker.call("run", timeout=compile_timeout if slow else 300, n=1)["seconds"]
                per_image = rows[i].images or 1
                rows[i].first_ms = first[0] * 1e3 / per_image if cfg.kind != KIND_MODEL else first[0] * 1e3
                # One run per call, so that a pathologically slow row (a thread count fighting its neighbours)
                # stops warming up after WARMUP_BUDGET_S instead of after `warmup` slow runs.
                warm: list[float] = []
                while len(warm) < (warmup if cfg.kind == KIND_MODEL else min(warmup, 1)) and sum(warm) < WARMUP_BUDGET_S:
                    warm += worker.call("run", timeout=600, n=1)["seconds"]
                estimate = percentile(warm, 50) if warm else first[0]
                target[i] = runs if runs is not None else max(MIN_RUNS, math.ceil((budget or 0.0) / max(estimate, 1e-7)))
            except WorkerError as exc:
                fail(i, exc)

        # Measure round-robin: each round gives every live row a slice of its runs, the order rotating.
        live = [i for i in range(len(configs)) if handles[i] is not None]
        rounds = min(ROUNDS, max((target[i] for i in live), default=1))
        for r in range(rounds):
            say(f"measuring: round {r + 1}/{rounds}")
            order = live[r % len(live):] + live[: r % len(live)] if live else []
            for i in order:
                handle = handles[i]
                if handle is None:
                    continue
                want = math.ceil(target[i] * (r + 1) / rounds) - len(times[i])
                if want <= 0:
                    continue
                try:
                    reply = handle.call("run", timeout=600, n=want)
                except WorkerError as exc:
                    fail(i, exc)
                    continue
                times[i] += reply["seconds"]
                cpu_s[i] += reply["cpu_s"]
                wall_s[i] += reply["wall_s"]

        if peak_gflops is None:
            from ..peak import fp32_peak_gflops

            peak_gflops = fp32_peak_gflops(on_measure=lambda: say("measuring this machine's FP32 peak once "
                                                                  "(a few seconds; cached for later runs)"))
        for i, cfg in enumerate(configs):
            handle = handles[i]
            if handle is None:
                continue
            try:
                extra = handle.call("finish", timeout=60)
            except WorkerError as exc:
                fail(i, exc)
                continue
            row = rows[i]
            row.peak_rss_mb, row.rss_scope, row.stages_ms = extra["peak_rss_mb"], handle.scope, extra.get("stages_ms")
            row.runs = len(times[i])
            row.cpu_percent = cpu_percent(cpu_s[i], wall_s[i])
            if cfg.kind == KIND_MODEL:
                row.__dict__.update(summarize(times[i], row.batch))
            else:  # a pass over the images: latencies per image, amortized over the pass
                row.__dict__.update(summarize([t / len(paths) for t in times[i]], 1))
    finally:
        for h in handles:
            if h is not None:
                h.close()

    counted: dict[str, int | None] = {}
    for row in rows:  # only models that loaded: a broken file already has its reason in the row's note
        if row.backend in ("onnxruntime", "openvino") and row.kind == KIND_MODEL and row.macs is None and row.p50_ms is not None:
            if row.model not in counted:
                counted[row.model] = onnx_macs(row.model)
            row.macs = counted[row.model]
    for row in rows:
        if row.kind == KIND_MODEL and row.p50_ms is not None:
            # The measured peak is this CPU's: a row that ran on a GPU gets GFLOP/s but no share of it.
            cpu_peak = peak_gflops if row.device == "cpu" else None
            row.gflops, row.peak_fraction = efficiency(row.macs, row.batch, row.p50_ms, peak_gflops=cpu_peak,
                                                       threads=row.threads)
    settings = {"batches": list(batches), "threads": list(threads), "warmup": warmup, "runs": runs, "seconds": budget,
                "isolate": isolate, "device": device, "rounds": ROUNDS, "openvino": openvino,
                "eval_dir": None if eval_dir is None else os.fspath(eval_dir)}
    return BenchReport(rows=rows, machine=machine_info(), settings=settings, peak_gflops=peak_gflops)


def _checkpoints(torch_checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str]:
    """The --torch checkpoints as paths, each checked to exist, and torch checked to be installed."""
    if torch_checkpoint is None:
        return []
    if isinstance(torch_checkpoint, (str, os.PathLike)):
        ckpts = [os.fspath(torch_checkpoint)]
    else:
        ckpts = [os.fspath(c) for c in torch_checkpoint]
    for ckpt in ckpts:
        if not Path(ckpt).is_file():
            raise BenchError(f"{ckpt}: no such checkpoint; --torch takes a .pt file written by `edgecnn train`")
    if ckpts:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise BenchError("--torch needs PyTorch, which is not installed: pip install 'edgecnn[train]'")
    return ckpts


def _configs(models: Sequence[str], batches: Sequence[int], threads: Sequence[int], device: str,
             torch_checkpoints: Sequence[str], torch_compile: bool, image_paths: tuple[str, ...],
             images_batch: int, openvino: bool = False) -> list[RowConfig]:
    out: list[RowConfig] = []
    for b in batches:
        for t in threads:
            for m in models:
                out.append(RowConfig(m, "onnxruntime", KIND_MODEL, b, t, device))
                if openvino:  # OpenVINO's CPU plugin, whatever --device says: the peer on the same CPU
                    out.append(RowConfig(m, "openvino", KIND_MODEL, b, t, "cpu"))
            for ckpt in torch_checkpoints:
                for variant in ("eager", "compile") if torch_compile else ("eager",):
                    out.append(RowConfig(ckpt, "torch", KIND_MODEL, b, t, device, variant=variant))
    if image_paths:
        for t in threads:
            for m in models:
                out.append(RowConfig(m, "onnxruntime", KIND_CLASSIFY, images_batch, t, device, paths=image_paths))
            out.append(RowConfig(models[0], "onnxruntime", KIND_NAIVE, 1, t, device, paths=image_paths))
    return out


def _image_paths(images_dir: str | os.PathLike, limit: int | None) -> tuple[str, ...]:
    from edgecnn.runtime.preprocess import is_image_file

    root = Path(images_dir)
    if not root.is_dir():
        raise BenchError(f"{root}: not a folder of images; give --images DIR")
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise BenchError(f"{root}: no image files found (looked for jpg, png, ... recursively)")
    return tuple(paths[:limit] if limit else paths)

