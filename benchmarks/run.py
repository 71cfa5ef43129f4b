"""The benchmark suite: the model family FP32 vs INT8 vs PyTorch, the default model in detail, `classify images`
against a naive loop, and the speed targets, written to benchmarks/results/RESULTS.md with charts.

    make demo && python benchmarks/run.py            # or: make bench
    python benchmarks/run.py --seconds 3 --images 300

Trains nothing: it uses what `edgecnn demo` left in ./edgecnn-demo (the trained default model, its FP32 and
INT8 ONNX files, the synthetic data). The other members of the model family are measured at their default
sizes with untrained weights (same operators and shapes, so the same speed), exported and quantized once
into benchmarks/.cache/family/. Every measurement goes through `edgecnn.bench.bench`, the code of
`edgecnn bench`: each row in its own process, rows interleaved round by round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from edgecnn.bench import (
    KIND_CLASSIFY,
    KIND_MODEL,
    KIND_NAIVE,
    BenchReport,
    BenchRow,
    bench,
    cold_starts,
    format_table,
    percentile,
    profile_operators,
    write_outputs,
)
from edgecnn.defaults import DEFAULT_ARCH, DEFAULT_DEMO_DIR
from edgecnn.peak import fp32_peak_gflops
from edgecnn.runtime.spec import META_CHECKPOINT_SHA256, META_PRECISION

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The targets of issue 5: key -> threshold.
TARGETS = {
    "int8_vs_torch": 4.0,  # INT8 onnxruntime p50 at least 4x faster than PyTorch eager FP32, batch 1, 1 thread
    "int8_vs_fp32": 1.25,  # INT8 at least 1.25x faster than FP32 onnxruntime (issue 15: per model, see the family)
    "ort_vs_openvino": 1.0,  # the shipped path (onnxruntime INT8) at least as fast as the best OpenVINO row
    "fp32_peak_fraction": 0.40,  # FP32 onnxruntime at >= 40% of the measured single-thread FP32 peak
    "classify_vs_naive": 4.0,  # classify images >= 4x the naive loop's images/s, 2 threads, 640x480 JPEGs (issue 15)
    "import_session_s": 0.3,  # import edgecnn.runtime + session creation < 0.3 s
    "classify_peak_mb": 150.0,  # classify images peak memory < 150 MB
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- artefacts
def onnx_meta(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # metadata only: load fast
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def demo_artefacts(demo: Path) -> dict[str, Path]:
    """The demo's checkpoint, FP32 and INT8 models (matched by the checkpoint hash in their metadata) and data."""
    from edgecnn.checkpoint import file_sha256

    hint = f"run `make demo` (or `edgecnn demo -o {demo}`) first; the suite trains nothing itself"
    ckpt = demo / "run" / "best.pt"
    if not ckpt.is_file():
        raise SystemExit(f"benchmarks: no trained model in {demo} ({ckpt} is missing): {hint}")
    sha = file_sha256(ckpt)
    found: dict[str, Path] = {"checkpoint": ckpt, "data": demo / "data"}
    for path in sorted(demo.rglob("*.onnx")):
        meta = onnx_meta(path)
        if meta.get(META_CHECKPOINT_SHA256) != sha:
            continue
        precision = meta.get(META_PRECISION, "")
        if precision in ("fp32", "int8") and precision not in found:
            found[precision] = path
    missing = [k for k in ("fp32", "int8") if k not in found]
    if missing:
        raise SystemExit(f"benchmarks: no {' or '.join(missing).upper()} ONNX model of {ckpt} in {demo}: {hint}")
    return found


def family_models(demo: dict[str, Path], cache: Path) -> list[dict[str, object]]:
    """Every registered architecture at its default size: the demo's trained files, else untrained ones made once."""
    import torch

    from edgecnn.checkpoint import load_checkpoint, save_checkpoint
    from edgecnn.export import export_onnx, quantize
    from edgecnn.models import create_model, list_models, model_info
    from edgecnn.runtime.spec import PreprocessSpec

    base = load_checkpoint(demo["checkpoint"])
    out = []
    for arch in list_models():
        size = model_info(arch).default_size
        if arch == base.arch and base.spec.size == size:
            out.append({"arch": arch, "size": size, "trained": True, "checkpoint": demo["checkpoint"],
                        "fp32": demo["fp32"], "int8": demo["int8"]})
            continue
        folder = cache / f"{arch}-{size}"
        ckpt, fp32, int8 = folder / "init.pt", folder / "model.onnx", folder / "model.int8.onnx"
        marker = folder / ".complete"
        if not marker.is_file():
            log(f"family: {arch} at {size}px (untrained weights): export and quantize once into {folder}")
            torch.manual_seed(0)
            spec = PreprocessSpec.from_dict({**base.spec.to_dict(), "size": size})
            model = create_model(arch, num_classes=spec.num_classes)
            save_checkpoint(ckpt, {**base.data, "arch": arch, "model_args": {}, "spec": spec.to_dict(),
                                   "state_dict": model.state_dict(), "history": [], "epoch": 0})
            export_onnx(ckpt, fp32)
            # Calibrated on the demo's images (resized to this input by the runtime's preprocessing).
            quantize(fp32, demo["data"] / "train", int8, calib_size=64, max_drop=1.0, force=True)
            marker.write_text("ok")
        out.append({"arch": arch, "size": size, "trained": False, "checkpoint": ckpt, "fp32": fp32, "int8": int8})
    return out


# Published figures for the same architectures on boards, as context for the table (not measured here).
PI_CONTEXT = [
    "Context, not measured here: published Raspberry Pi figures for MobileNetV2 at 224 px are 10.5 ms FP32 on a Pi 5 "
    "(ncnn, 4 threads) and 26.4 ms quantized on a Pi 4 (PyTorch qnnpack). An x86 server core is several times a "
    "Pi core; `benchmarks/arm64_emulated.py` checks the bundle on ARM64 under emulation, which says nothing of speed.",
]
# Below this INT8/FP32 speed-up `edgecnn quantize` recommends FP32 (the module; the package's `quantize` is the function).
MIN_INT8_SPEEDUP: float = importlib.import_module("edgecnn.export.quantize").MIN_SPEEDUP


def int8_table(family: BenchReport, fam: list[dict[str, object]]) -> list[str]:
    """Per model: FP32 and INT8 p50 at 1 and 2 threads, the speed-up, and what `quantize` would recommend."""
    lines = ["| model | FP32 p50 ms, 1 thread | INT8 p50 ms, 1 thread | INT8 speed-up, 1 thread | FP32 p50 ms, 2 threads "
             "| INT8 p50 ms, 2 threads | INT8 speed-up, 2 threads | size FP32 / INT8 | ship |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for m in fam:
        cells, speedups = [], []
        files: tuple[BenchRow | None, BenchRow | None] = (None, None)
        for threads in (1, 2):
            f = find(family, model=str(m["fp32"]), backend="onnxruntime", batch=1, threads=threads, kind=KIND_MODEL)
            q = find(family, model=str(m["int8"]), backend="onnxruntime", batch=1, threads=threads, kind=KIND_MODEL)
            r = ratio(f and f.p50_ms, q and q.p50_ms)
            speedups.append(r)
            files = (f, q) if threads == 1 else files  # the rows carry each file's size
            cells += [f"{f.p50_ms:.3f}" if f and f.p50_ms else "-", f"{q.p50_ms:.3f}" if q and q.p50_ms else "-",
                      f"{r:.2f}x" if r else "-"]
        sizes = " / ".join(f"{row.size_bytes / 1e6:.2f}" if row and row.size_bytes else "-" for row in files) + " MB"
        ship = "-" if speedups[0] is None else ("INT8" if speedups[0] >= MIN_INT8_SPEEDUP else
                                                 "FP32 (INT8 for size only)")
        lines.append(f"| {m['arch']}@{m['size']} | " + " | ".join(cells) + f" | {sizes} | {ship} |")
    lines += ["", f"ship: what `edgecnn quantize` recommends from its own on-the-spot measurement, by the same rule: INT8 "
              f"when it is at least {MIN_INT8_SPEEDUP:g}x FP32 at batch 1 on one thread, else FP32 unless the file size "
              "matters. Both rows of a model ran in the same interleaved rounds."]
    return lines


# ---------------------------------------------------------------------------------------- the figures
def find(report: BenchReport, **want: object) -> BenchRow | None:
    for row in report.rows:
        if all(getattr(row, k) == v for k, v in want.items()) and not row.note:
            return row
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def targets(detail: BenchReport, e2e: BenchReport, fp32: str, int8: str, ckpt: str,
            starts: list[dict[str, float]]) -> list[dict[str, object]]:
    b1t1 = {"batch": 1, "threads": 1, "kind": KIND_MODEL}
    f = find(detail, model=fp32, backend="onnxruntime", **b1t1)
    q = find(detail, model=int8, backend="onnxruntime", **b1t1)
    t = find(detail, model=ckpt, backend="torch", variant="eager", **b1t1)
    c = find(e2e, kind=KIND_CLASSIFY)
    n = find(e2e, kind=KIND_NAIVE)
    out = []

    def add(key: str, name: str, value: float | None, fmt: str, higher_is_better: bool, how: str) -> None:
        goal = TARGETS[key]
        met = None if value is None else (value >= goal if higher_is_better else value < goal)
        out.append({"target": name, "goal": ((">= " if higher_is_better else "< ") + fmt.format(goal)),
                    "measured": "n/a" if value is None else fmt.format(value), "met": met, "how": how, "key": key,
                    "value": value})

    add("int8_vs_torch", "INT8 onnxruntime vs PyTorch eager FP32 (b1, 1 thread)",
        ratio(t and t.p50_ms, q and q.p50_ms), "{:.2f}x", True, "ratio of p50 latencies, same interleaved run")
    add("int8_vs_fp32", "INT8 vs FP32 onnxruntime (b1, 1 thread)", ratio(f and f.p50_ms, q and q.p50_ms), "{:.2f}x",
        True, "ratio of p50 latencies, same interleaved run")
    ov = [r for r in detail.rows if r.backend == "openvino" and r.batch == 1 and r.threads == 1 and r.p50_ms]
    best_ov = min(ov, key=lambda r: r.p50_ms or 0.0) if ov else None
    add("ort_vs_openvino", "onnxruntime INT8 vs the best OpenVINO row (b1, 1 thread)",
        ratio(best_ov and best_ov.p50_ms, q and q.p50_ms), "{:.2f}x", True,
        f"ratio of p50 latencies, same interleaved run (best OpenVINO row: {best_ov.precision if best_ov else 'none'})")
    add("fp32_peak_fraction", "FP32 onnxruntime share of the FP32 peak (b1, 1 thread)", f and f.peak_fraction,
        "{:.0%}", True, "2 x MACs / p50, over the single-thread SGEMM peak")
    add("classify_vs_naive", "classify images vs naive loop, 640x480 JPEGs, 2 threads",
        ratio(c and c.throughput_ips, n and n.throughput_ips), "{:.2f}x", True, "ratio of images/s (mean over passes)")
    totals = [s["import_s"] + s["session_s"] for s in starts]
    add("import_session_s", "import edgecnn.runtime + session creation (INT8)",
        percentile(totals, 50) if totals else None, "{:.3f} s", False,
        f"median of {len(totals)} fresh interpreters (min {min(totals, default=0):.3f}, max {max(totals, default=0):.3f} s); "
        "interpreter start-up not included")
    add("classify_peak_mb", "classify images peak memory", c and c.peak_rss_mb, "{:.0f} MB", False,
        "VmHWM of the process that ran only classify images")
    return out


def machine_text(report: BenchReport, peak: float, load_before: float, load_after: float) -> list[str]:
    m = report.machine
    versions = []
    for pkg in ("onnxruntime", "numpy", "pillow", "torch"):
        try:
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return [
        f"- CPU: {m.get('cpu')}, {m.get('cores')} logical cores; SIMD: {', '.join(m.get('simd', [])) or 'n/a'}",
        f"- {m.get('os')}, Python {m.get('python')}; {', '.join(versions)}",
        f"- Measured FP32 peak: {peak:.1f} GFLOP/s on one core (best single-thread SGEMM, numpy BLAS and "
        "onnxruntime MLAS; cached in ~/.cache/edgecnn/peak.json, best figure kept)",
        f"- Load average (1 min) before / after the suite: {load_before:.2f} / {load_after:.2f} "
        "(other work on the machine slows every row alike, since rows are interleaved, but widens p90/p99)",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit or '?'}",
    ]


def profile_table(rows: list[dict[str, object]]) -> list[str]:
    lines = ["| operator | nodes | ms per run | share of kernel time |", "|---|---:|---:|---:|"]
    for r in rows:
        share = "" if r["share"] is None else f"{r['share']:.0%}"
        lines.append(f"| {r['op']} | {r['nodes'] or ''} | {r['ms_per_run']:.3f} | {share} |")
    return lines


def import_breakdown() -> list[str]:
    """Cumulative import time of the heavy modules behind `import edgecnn.runtime`, from python -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edgecnn.runtime"], capture_output=True,
                          text=True, check=False)
    cumulative: dict[str, int] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            cumulative[name] = max(cumulative.get(name, 0), int(parts[1]))
    wanted = ["edgecnn.runtime", "numpy", "onnxruntime", "PIL.Image", "concurrent.futures", "edgecnn.runtime.classifier"]
    return [f"{name} {cumulative[name] / 1e3:.0f} ms" for name in wanted if name in cumulative]


def charts(out: Path, family: BenchReport, e2e: BenchReport, names: dict[str, str]) -> list[Path]:
    from edgecnn.fileio import atomic_path
    from edgecnn.plot import bar_chart, hstack

    written = []
    rows = sorted((r for r in family.rows if r.p50_ms is not None),  # each architecture's bars together
                  key=lambda r: (names.get(r.model, r.model), r.backend != "onnxruntime", r.precision))
    labels = [f"{names.get(r.model, Path(r.model).name)} {'torch' if r.backend == 'torch' else r.precision}" for r in rows]
    image = bar_chart(labels, [r.p50_ms or 0.0 for r in rows], title="model family: p50 latency, batch 1, 1 thread (ms)",
                      value_format="{:.2f}", note="lower is better; untrained family members: same shapes, same speed")
    with atomic_path(out / "family.png") as tmp:
        image.save(tmp, format="PNG")
    written.append(out / "family.png")
    c, n = find(e2e, kind=KIND_CLASSIFY), find(e2e, kind=KIND_NAIVE)
    if c and n:
        left = bar_chart(["naive loop", "classify images"], [n.throughput_ips or 0.0, c.throughput_ips or 0.0],
                         title="640x480 JPEGs, 2 threads: images/s", highlight=1, value_format="{:.0f}")
        stages = c.stages_ms or {}
        right = bar_chart(list(stages), list(stages.values()), title="classify images: ms per image by stage",
                          value_format="{:.2f}")
        with atomic_path(out / "classify.png") as tmp:
            hstack([left, right]).save(tmp, format="PNG")
        written.append(out / "classify.png")
    return written


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / DEFAULT_DEMO_DIR, help="the folder `edgecnn demo` wrote")
    parser.add_argument("-o", "--out", type=Path, default=HERE / "results")
    parser.add_argument("--seconds", type=float, default=1.0, help="measured time per row (family rows: half)")
    parser.add_argument("--images", type=int, default=200, help="640x480 JPEGs per end-to-end pass")
    parser.add_argument("--compile-timeout", type=float, default=120.0, help="seconds torch.compile may take")
    parser.add_argument("--no-family", action="store_true", help="only the default model")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--no-openvino", action="store_true", help="skip the OpenVINO rows of the default model")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    demo = demo_artefacts(args.demo)
    fp32, int8, ckpt = str(demo["fp32"]), str(demo["int8"]), str(demo["checkpoint"])
    names = {fp32: DEFAULT_ARCH, int8: DEFAULT_ARCH, ckpt: DEFAULT_ARCH}
    say = lambda msg: log(f"  {msg}")  # noqa: E731

    log("FP32 peak (single-thread SGEMM), re-probed; the best figure ever measured here is kept")
    peak = fp32_peak_gflops(refresh=True)

    log(f"1/4 default model {DEFAULT_ARCH}: FP32, INT8, PyTorch eager; batch 1, 8; threads 1, 2")
    detail = bench([fp32, int8], batches=[1, 8], threads=[1, 2], torch_checkpoint=ckpt, torch_compile=False,
                   openvino=not args.no_openvino, eval_dir=demo["data"] / "val", seconds=args.seconds,
                   peak_gflops=peak, progress=say)
    compiled = None
    if not args.no_compile:
        log(f"2/4 torch.compile vs eager vs onnxruntime, batch 1, 1 thread (compile time-boxed at {args.compile_timeout:.0f} s)")
        compiled = bench([fp32], torch_checkpoint=ckpt, torch_compile=True, compile_timeout=args.compile_timeout,
                         seconds=args.seconds, peak_gflops=peak, progress=say)

    log(f"3/4 classify images vs a naive loop: {args.images} JPEGs of 640x480, 2 threads")
    sys.path.insert(0, str(HERE))  # the suite's 640x480 JPEGs are made in one place: classify_throughput.py
    from classify_throughput import make_jpegs

    jpeg_dir = HERE / ".cache" / "jpeg640x480"
    make_jpegs(jpeg_dir, args.images)
    e2e = bench([int8], threads=[2], images_dir=jpeg_dir, images_limit=args.images, seconds=args.seconds * 2,
                warmup=1, peak_gflops=peak, progress=say)

    family = None
    fam: list[dict[str, object]] = []
    if not args.no_family:
        log("4/4 every registered model at its default size: FP32, INT8, PyTorch eager; batch 1, 1 and 2 threads")
        fam = family_models(demo, HERE / ".cache" / "family")
        names.update({str(m[k]): f"{m['arch']}@{m['size']}" for m in fam for k in ("fp32", "int8", "checkpoint")})
        family = bench([str(m[k]) for m in fam for k in ("fp32", "int8")], torch_checkpoint=[str(m["checkpoint"]) for m in fam],
                       threads=[1, 2], torch_compile=False, seconds=args.seconds / 2, peak_gflops=peak, progress=say)

    log("profiling the default model's operators (onnxruntime profiler, 1 thread)")
    profiles = {name: profile_operators(path, threads=1, runs=300) for name, path in (("FP32", fp32), ("INT8", int8))}
    load_after = os.getloadavg()[0]
    log("cold starts: import edgecnn.runtime + session creation, 7 fresh interpreters")
    starts = cold_starts(int8, repeats=7)
    goals = targets(detail, e2e, fp32, int8, ckpt, starts)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(detail, out, names)  # bench.json + bench.png of the default model in detail
    pngs = charts(out, family, e2e, names) if family else []
    everything = {"detail": detail.to_dict(), "compile": compiled.to_dict() if compiled else None, "classify": e2e.to_dict(),
                  "family": family.to_dict() if family else None, "profiles": profiles, "targets": goals, "cold_starts": starts,
                  "peak_gflops": peak}
    (out / "results.json").write_text(json.dumps(everything, indent=1))

    md = ["# edgecnn benchmark results", "", "Written by `python benchmarks/run.py` (`make bench`); do not edit by hand.", "",
          "## Machine", "", *machine_text(detail, peak, load_before, load_after), "",
          "## Targets (default model, batch 1)", "", "| target | goal | measured | met | how |", "|---|---|---|---|---|"]
    for g in goals:
        met = "n/a" if g["met"] is None else ("met" if g["met"] else "**missed**")
        md.append(f"| {g['target']} | {g['goal']} | {g['measured']} | {met} | {g['how']} |")
    slow_import = next((g for g in goals if g["key"] == "import_session_s" and g["met"] is False), None)
    if slow_import:
        md += ["", f"Import time, where it goes (`python -X importtime -c 'import edgecnn.runtime'`, cumulative, "
               f"this run's load): {', '.join(import_breakdown())}. Session creation itself is the init column below."]
    md += ["", f"## Default model ({DEFAULT_ARCH}, {Path(fp32).name} / {Path(int8).name} / {Path(ckpt).name})", "",
           format_table(detail, markdown=True, names=names), ""]
    if compiled:
        md += ["### torch.compile (batch 1, 1 thread)", "", format_table(compiled, markdown=True, names=names), ""]
    md += ["## classify images vs naive loop (640x480 JPEGs, 2 threads)", "", format_table(e2e, markdown=True, names=names), ""]
    for row in e2e.rows:
        if row.stages_ms:
            md.append("Stage split of `classify images`, ms per image: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in row.stages_ms.items()) + ".")
    md.append("")
    if family:
        md += ["## INT8 against FP32, every registered model at its default size (batch 1)", "",
               *int8_table(family, fam), "", *PI_CONTEXT, ""]
        md += ["## Every registered model at its default size (batch 1, 1 and 2 threads)", "",
               "Trained: " + ", ".join(f"{m['arch']}@{m['size']}" for m in fam if m["trained"]) + "; the others have "
               "untrained weights (same operators and shapes, so the same speed; their INT8 accuracy means nothing).", "",
               format_table(family, markdown=True, names=names), ""]
    md += ["## Where the time goes (onnxruntime profiler, default model, batch 1, 1 thread)", "",
           "Per-operator kernel time after graph optimization; the profiler's own overhead inflates small kernels.", ""]
    for name, rows in profiles.items():
        md += [f"### {name}", "", *profile_table(rows), ""]
    md += ["## Columns", "", COLUMNS_TEXT, "", f"Suite wall time: {time.perf_counter() - start:.0f} s.", ""]
    (out / "RESULTS.md").write_text("\n".join(md))
    log(f"wrote {out / 'RESULTS.md'}, results.json, bench.json, bench.png" + "".join(f", {p.name}" for p in pngs))
    for g in goals:
        log(f"  {'MET   ' if g['met'] else 'MISSED' if g['met'] is False else 'N/A   '} {g['target']}: {g['measured']} "
            f"(goal {g['goal']})")
    return 0


COLUMNS_TEXT = """\
- **init**: ms to create the onnxruntime session (torch: load the checkpoint and build the model); **first**: the first
  run after it (lazy allocations; for torch.compile, the compilation).
- **p50 / p90 / p99 / mean / std**: latency of one run in ms after warm-up (classify / naive rows: ms per image,
  amortized over a pass over the folder); **img/s**: images per second at the mean.
- **MB**: peak resident memory (VmHWM) of the worker process that ran only that row.
- **GFLOP/s**: 2 x multiply-accumulates x batch / p50; **%peak**: that over the measured single-thread FP32 peak
  times the row's threads. INT8 rows count the same MACs, so their %peak can pass 100%.
- Every row runs in its own process; the rows take turns in 10 rounds, so a neighbour's load slows all alike."""


if __name__ == "__main__":
    sys.exit(main())
