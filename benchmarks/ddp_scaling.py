"""Data-parallel training on this machine: 1 process against N (torchrun, gloo), the same global batch.

    python benchmarks/ddp_scaling.py                       # uses ./edgecnn-demo/data (run `make demo` first)
    python benchmarks/ddp_scaling.py --data DIR --epochs 10 --nproc 2

Reports training images/s (median over epochs after the first) and the best validation accuracy of each
run, and writes benchmarks/results/ddp_scaling.md. Trains into a temporary folder; keeps nothing else.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(data: Path, out: Path, nproc: int, epochs: int, batch: int) -> dict:
    cmd = [sys.executable, "-m", "edgecnn", "train", str(data), "-o", str(out), "--epochs", str(epochs),
           "--batch-size", str(batch), "--device", "cpu", "-q"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    rates = [e["train_images_per_s"] for e in metrics["epochs"][1:]] or [metrics["epochs"][0]["train_images_per_s"]]
    return {"processes": nproc, "world_size": metrics["world_size"], "train_images_per_s": statistics.median(rates),
            "best_val_accuracy": metrics["val_accuracy"], "wall_s": wall, "epochs": epochs, "global_batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "edgecnn-demo" / "data")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch, the same for every run")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_scaling.md")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        sys.exit(f"{args.data}: no dataset; run `make demo` first or pass --data")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.nproc):
            rows.append(run(args.data, Path(tmp) / f"p{n}", n, args.epochs, args.batch_size))
            print(json.dumps(rows[-1]))
    base = rows[0]["train_images_per_s"]
    lines = [
        "# Data-parallel training: 1 vs N processes (torchrun, gloo, CPU)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
        f"data {args.data.name}; {args.epochs} epochs; global batch {args.batch_size} in every run.",
        "",
        "| processes | train images/s (median epoch) | speed-up | best val accuracy | wall s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['processes']} | {r['train_images_per_s']:.0f} | {r['train_images_per_s'] / base:.2f}x | "
                     f"{r['best_val_accuracy']:.4f} | {r['wall_s']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
