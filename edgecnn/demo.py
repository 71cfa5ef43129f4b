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


@dataclass
class DemoResult:
    paths: DemoPaths
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    summary: dict[str, object] = field(default_factory=dict)


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
        summary = synthesize(paths.data, classes=DEMO_CLASSES, per_class=DEMO_PER_CLASS, size=DEMO_SIZE, seed=DEMO_SEED)
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
        train(paths.data, paths.run, config, resume=resume)
        echo(f"   curves: {paths.run / 'curves.png'}")

    def evaluation() -> None:
        report = evaluate(paths.checkpoint, paths.data / "val")
        result.summary["val_accuracy"] = report.accuracy
        echo(f"   {paths.checkpoint}: accuracy {report.accuracy:.4f} on {report.n} validation images")
        worst = min(report.per_class.items(), key=lambda kv: kv[1]["recall"])
        echo(f"   hardest class: {worst[0]} (recall {worst[1]['recall']:.3f})")

    _stage(result, "data", data, echo)
    _stage(result, "train", training, echo)
    _stage(result, "eval", evaluation, echo)
    total = sum(result.stages.values())
    echo(f"\ndemo finished in {total:.0f}s; everything is in {paths.root}/")
    sys.stdout.flush()
    return result
