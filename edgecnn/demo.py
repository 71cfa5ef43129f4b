"""`edgecnn demo`: the whole pipeline on built-in synthetic data, one printed stage at a time.

    run_demo("edgecnn-demo")

Stages: data -> train -> eval -> export -> quantize -> classify -> bench. Each stage reuses what an
earlier demo left in the folder when it is complete, so a second run is quick; ``fresh=True`` redoes all.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .defaults import DEFAULT_ARCH
from .runtime.output import human_bytes
from .runtime.policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN

# What the demo builds; tuned so the whole run stays well under five minutes on two CPU cores.
DEMO_CLASSES = 5
DEMO_PER_CLASS = 600  # 480 train + 120 val per class: a few thousand images, like a small user dataset
DEMO_SIZE = 64
DEMO_EPOCHS = 30
DEMO_SEED = 0


@dataclass
class DemoPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def checkpoint(self) -> Path:
        return self.run / "best.pt"

    @property
    def fp32(self) -> Path:
        return self.root / "model.onnx"

    @property
    def int8(self) -> Path:
        # `edgecnn classify images` without -m looks for exactly this file.
        return self.root / "model.int8.onnx"

    @property
    def bench(self) -> Path:
        return self.root / "bench"


@dataclass
class DemoResult:
    paths: DemoPaths
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    summary: dict[str, object] = field(default_factory=dict)


def bench_names(paths: DemoPaths) -> dict[str, str]:
    """What the demo's bench table calls each model; a row label adds the backend, variant and precision itself."""
    return {str(paths.fp32): "ONNX", str(paths.int8): "ONNX", str(paths.checkpoint): "PyTorch"}


def _stage(result: DemoResult, name: str, fn: Callable[[], None], echo: Callable[[str], None]) -> None:
    echo(f"\n== {name} ==")
    t0 = time.perf_counter()
    fn()
    result.stages[name] = time.perf_counter() - t0
    echo(f"   ({result.stages[name]:.1f}s)")


def run_demo(out_dir: str | Path = "edgecnn-demo", *, fresh: bool = False, epochs: int = DEMO_EPOCHS,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into ``out_dir``; return timings and the headline figures."""
    from .evaluate import evaluate
    from .synth import synthesize
    from .train import TrainConfig, train

    paths = DemoPaths(Path(out_dir))
    if fresh and paths.root.exists():
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True, exist_ok=True)
    result = DemoResult(paths)

    def data() -> None:
        marker = paths.data / ".complete"
        wanted = f"{DEMO_CLASSES} {DEMO_PER_CLASS} {DEMO_SIZE} {DEMO_SEED}"
        if marker.is_file() and marker.read_text() == wanted:
            echo(f"   reusing {paths.data}")
            return
        # force: the demo owns this folder; a set from other DEMO_* values is replaced.
        summary = synthesize(paths.data, classes=DEMO_CLASSES, per_class=DEMO_PER_CLASS, size=DEMO_SIZE, seed=DEMO_SEED,
                             force=True)
        marker.write_text(wanted)
        echo(f"   {summary.train_images} train + {summary.val_images} val images of {', '.join(summary.classes)} "
             f"({DEMO_SIZE}x{DEMO_SIZE}) in {paths.data}")

    def training() -> None:
        metrics = paths.run / "metrics.json"
        if metrics.is_file() and len(json.loads(metrics.read_text())["epochs"]) >= epochs and paths.checkpoint.is_file():
            echo(f"   reusing {paths.run} (delete it or pass --fresh to retrain)")
            return
        resume = (paths.run / "last.pt").is_file()
        config = TrainConfig(arch=DEFAULT_ARCH, img_size=DEMO_SIZE, epochs=epochs, seed=DEMO_SEED, device="cpu")
        train(paths.data, paths.run, config, resume=resume, epochs=epochs)  # a longer --epochs extends the run
        echo(f"   curves: {paths.run / 'curves.png'}")

    def evaluation() -> None:
        report = evaluate(paths.checkpoint, paths.data / "val")
        result.summary["val_accuracy"] = report.accuracy
        echo(f"   {paths.checkpoint}: accuracy {report.accuracy:.4f} on {report.n} validation images")
        worst = min(report.per_class.items(), key=lambda kv: kv[1]["recall"])
        echo(f"   hardest class: {worst[0]} (recall {worst[1]['recall']:.3f})")

    def export() -> None:
        from .export import export_onnx

        r = export_onnx(paths.checkpoint, paths.fp32, verify_dir=paths.data / "val")
        echo(f"   {r.path}: {human_bytes(r.size_bytes)}, uint8 NHWC input, opset {r.opset}; matches PyTorch on "
             f"{r.verified_images} images ({r.real_images} real), max |dp| {r.max_prob_diff:.1e}")

    def quantization() -> None:
        from .export import quantize

        # force: the demo shows the figures even when the accuracy gate fails, and says so below.
        r = quantize(paths.fp32, paths.data / "train", paths.int8, eval_dir=paths.data / "val", force=True)
        result.summary.update(fp32_accuracy=r.fp32_accuracy, int8_accuracy=r.quant_accuracy, agreement=r.agreement)
        assert r.accuracy_drop is not None and r.agreement is not None, "eval_dir was given: both are measured"
        assert r.fp32_ms is not None and r.quant_ms is not None, "the speed is measured by default"
        echo(f"   {'model':<16} {'accuracy':>9} {'size':>9} {'ms (b1 t1)':>11}")
        echo(f"   {'FP32 ONNX':<16} {r.fp32_accuracy:>9.4f} {human_bytes(r.fp32_bytes):>9} {r.fp32_ms:>11.3f}")
        echo(f"   {'INT8 ONNX':<16} {r.quant_accuracy:>9.4f} {human_bytes(r.quant_bytes):>9} {r.quant_ms:>11.3f}")
        echo(f"   drop {100 * r.accuracy_drop:+.2f} points, {r.size_ratio:.1f}x smaller, {r.speedup:.2f}x as fast; "
             f"top-1 agreement FP32 vs INT8 {100 * r.agreement:.1f}% on {r.agreement_images} images")
        if r.recommendation:
            echo(f"   note: {r.recommendation}")
        if not r.passed:
            echo("   WARNING: the INT8 model loses more than 1 point; `edgecnn quantize` would refuse it without --force")

    def classify() -> None:
        from .runtime import Classifier
        from .runtime.output import error_row, table_header, table_row

        clf = Classifier(paths.int8, device="cpu")
        files = sorted((paths.data / "val").rglob("*.png"))[:: max(1, DEMO_PER_CLASS // 5)][:8]
        echo(f"   {paths.int8} ({clf.precision}, {clf.input_dtype} {clf.input_layout} input) on {clf.device}")
        echo("   " + table_header())
        for r in clf.classify_paths(files, top_k=3, min_confidence=DEFAULT_MIN_CONFIDENCE, min_margin=DEFAULT_MIN_MARGIN):
            echo("   " + (table_row(str(r.path), r.prediction) if r.error is None else error_row(str(r.path), r.error)))

    def benchmark() -> None:
        from .bench import bench, format_table, write_outputs

        report = bench([paths.fp32, paths.int8], torch_checkpoint=paths.checkpoint, torch_compile=False,
                       batches=[1], threads=[1], seconds=1.0)
        names = bench_names(paths)
        write_outputs(report, paths.bench, names=names)
        for line in format_table(report, names=names).splitlines():
            echo("   " + line)
        echo(f"   (batch 1, 1 thread; {paths.bench / 'bench.png'}; the full suite: python benchmarks/run.py)")

    _stage(result, "data", data, echo)
    _stage(result, "train", training, echo)
    _stage(result, "eval", evaluation, echo)
    _stage(result, "export", export, echo)
    _stage(result, "quantize", quantization, echo)
    _stage(result, "classify", classify, echo)
    _stage(result, "bench", benchmark, echo)
    total = sum(result.stages.values())
    echo(f"\ndemo finished in {total:.0f}s; everything is in {paths.root}/")
    sys.stdout.flush()
    return result
