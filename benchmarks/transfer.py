"""Few-shot transfer on data made here: from scratch vs --init vs --freeze-backbone at 4, 8 and 16 images per class.

    python benchmarks/transfer.py                 # about 20 minutes on 2 shared cores; writes results/transfer.md
    python benchmarks/transfer.py --quick         # one seed, no recipe grid

A base model (resnet8, 48 px) learns five synthetic shapes (circle, square, triangle, star, cross; 500 images
each, enough for a network trained from scratch to learn them: with a few dozen per class it stays near
chance); the target task is the five others (ring, hexagon, arrow, stripes, checker) with k training images
per class and a fixed validation set of 20 per class. Every run uses the library's defaults unless the row says
otherwise: in particular --epochs is not given, so a small set gets DEFAULT_MIN_STEPS optimizer steps. The
accuracy is the last epoch's (not the best epoch's, which would select on the validation set), the mean of
the seeds (the k images are drawn per seed). A recipe grid at 8 images per class picks the transfer defaults
(head warm-up share, backbone learning rate), and a step grid from scratch picks the minimum number of steps.
Results are cached per run in results/transfer.json; delete it to measure again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecnn.synth import CLASS_NAMES, synthesize  # noqa: E402
from edgecnn.train import TrainConfig, train  # noqa: E402
from edgecnn.transfer import DEFAULT_BACKBONE_LR, DEFAULT_HEAD_WARMUP, DEFAULT_MIN_STEPS  # noqa: E402

ARCH, SIZE = "resnet8", 48  # tinycnn could not learn the base shapes at 32 px (0.21 against a chance of 0.20)
BASE_PER_CLASS, BASE_EPOCHS = 500, 20  # at batch 32 and lr 2e-3: about 1,600 steps
BASE, TARGET = CLASS_NAMES[:5], CLASS_NAMES[5:]
SHOTS = (4, 8, 16)
VAL_PER_CLASS = 20


def make_data(work: Path, seed: int) -> tuple[Path, dict[int, Path]]:
    """The base set (5 classes x 80 train) and, per k, the target set (5 other classes x k train, 20 val)."""
    pool = work / "pool"
    if not pool.exists():
        synthesize(pool, classes=10, per_class=625, size=SIZE, seed=0)  # 500 train + 125 val per class
    base = work / "base"
    if not base.exists():
        for split, n in (("train", BASE_PER_CLASS), ("val", 100)):
            for c in BASE:
                _copy(sorted((pool / split / c).iterdir())[:n], base / split / c)
    targets = {}
    import random

    for k in SHOTS:
        root = work / f"target-k{k}-s{seed}"
        if not root.exists():
            for c in TARGET:
                files = sorted((pool / "train" / c).iterdir())
                _copy(random.Random(f"{seed}-{c}").sample(files, 16)[:k], root / "train" / c)  # nested draws
                _copy(sorted((pool / "val" / c).iterdir())[:VAL_PER_CLASS], root / "val" / c)
        targets[k] = root
    return base, targets


def _copy(files: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, dest / f.name)


def run(data: Path, out: Path, **options) -> dict:
    config = TrainConfig(arch=ARCH, img_size=SIZE, device="cpu", calibrate=False, **options)
    result = train(data, out, config, progress=False, cache_dir=None)
    return {"final_acc": result.history[-1]["val_accuracy"], "best_acc": result.best_val_accuracy,
            "seconds": result.seconds, "epochs": result.epochs_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one seed, no grids")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results" / "transfer.json")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "transfer.md")
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    cache: dict[str, dict] = json.loads(args.cache.read_text()) if args.cache.exists() else {}
    work = Path(tempfile.gettempdir()) / "edgecnn-transfer-bench"
    work.mkdir(exist_ok=True)

    def cached(k: int, data: Path, **options) -> dict:
        # Keyed by the options, not the row's name: rows that are the same run share it.
        key = f"k{k}-s{options['seed']}-" + json.dumps({n: v for n, v in options.items() if n != "seed"}, sort_keys=True)
        if key not in cache:
            out = work / "runs" / key
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            cache[key] = run(data, out, **options)
            cache[key]["wall_s"] = time.perf_counter() - t0
            shutil.rmtree(out, ignore_errors=True)
            args.cache.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
            print(key, json.dumps(cache[key]), flush=True)
        return cache[key]

    base_data, _ = make_data(work, 0)
    base_run = work / "base-run"
    if "base" not in cache or not (base_run / "best.pt").exists():
        shutil.rmtree(base_run, ignore_errors=True)
        t0 = time.perf_counter()
        base = train(base_data, base_run, TrainConfig(arch=ARCH, img_size=SIZE, epochs=BASE_EPOCHS, batch_size=32,
                                                      lr=2e-3, device="cpu", calibrate=False),
                     progress=False, cache_dir=None)
        cache["base"] = {"final_acc": base.history[-1]["val_accuracy"], "seconds": time.perf_counter() - t0}
    parent = str(base_run / "best.pt")

    methods = {
        "scratch, 30 epochs (the old default)": {"epochs": 30},
        "scratch (defaults)": {},
        "--init (defaults)": {"init": parent},
        "--init --freeze-backbone": {"init": parent, "freeze_backbone": True},
    }
    grid: dict[str, dict] = {}
    if not args.quick:
        for warm in (0.0, DEFAULT_HEAD_WARMUP):
            for blr in (DEFAULT_BACKBONE_LR, 1.0):
                grid[f"--init, head warm-up {warm:.0%}, backbone lr x{blr:g}"] = {
                    "init": parent, "head_warmup": warm, "backbone_lr": blr}
        for steps in (150, 600):  # and DEFAULT_MIN_STEPS: the rows "(defaults)" above
            grid[f"scratch, min steps {steps}"] = {"min_steps": steps}
            grid[f"--init, min steps {steps}"] = {"init": parent, "min_steps": steps}

    table: dict[str, dict[int, list[dict]]] = {}
    for seed in seeds:
        _, targets = make_data(work, seed)
        for k in SHOTS:
            for name, options in methods.items():
                table.setdefault(name, {}).setdefault(k, []).append(cached(k, targets[k], seed=seed, **options))
        for name, options in grid.items():
            table.setdefault(name, {}).setdefault(8, []).append(cached(8, targets[8], seed=seed, **options))

    def cell(rows: list[dict]) -> str:
        acc = statistics.mean(r["final_acc"] for r in rows)
        return f"{acc:.3f} ({statistics.mean(r['seconds'] for r in rows):.0f} s)"

    lines = [
        "# Few-shot transfer: from scratch vs --init vs --freeze-backbone",
        "",
        f"Measured by `benchmarks/transfer.py` on {platform.machine()}, {os.cpu_count()} cores shared with other "
        "work (times are indicative only), torch threads default.",
        f"Base: {ARCH} at {SIZE} px trained {BASE_EPOCHS} epochs on {', '.join(BASE)} ({BASE_PER_CLASS} images each; last-epoch val accuracy "
        f"{cache['base']['final_acc']:.3f}). Target: {', '.join(TARGET)}, k training images per class, "
        f"{VAL_PER_CLASS} validation images per class; last-epoch validation accuracy (chance 0.200), mean of "
        f"{len(seeds)} draw(s) of the k images, and training seconds. Defaults: min steps {DEFAULT_MIN_STEPS}, "
        f"head warm-up {DEFAULT_HEAD_WARMUP:.0%} of the steps, backbone learning rate x{DEFAULT_BACKBONE_LR:g}.",
        "",
        "| start | " + " | ".join(f"k = {k}" for k in SHOTS) + " |",
        "|---|" + "---:|" * len(SHOTS),
    ]
    for name in methods:
        lines.append(f"| {name} | " + " | ".join(cell(table[name][k]) for k in SHOTS) + " |")
    if grid:
        lines += ["", "## Choosing the defaults (k = 8)", "", "| run | accuracy (seconds) |", "|---|---:|"]
        for name in grid:
            lines.append(f"| {name} | {cell(table[name][8])} |")
    args.out.write_text("\n".join(lines) + "\n")
    args.cache.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
