"""INT8 accuracy drop of every torchvision zoo architecture, with and without its activation gates kept in FP32.

    python benchmarks/zoo_int8.py                  # writes benchmarks/results/zoo_int8.md (+ .json)
    python benchmarks/zoo_int8.py --arch mobilenet_v3_small --epochs 4

No ImageNet weights here (no network): each architecture is trained from scratch for a few epochs on
synthetic shapes (--size px), exported, and quantized with edgecnn's defaults (static QDQ, per-channel,
MinMax, 64 calibration images); the FP32 and INT8 accuracies are measured on a separate evaluation set.
The "gates in FP32" variant keeps the HardSigmoid/Sigmoid and Mul nodes in float: hardswish (x *
hardsigmoid(x), which onnxruntime's pre-processing decomposes into those two), SiLU and the squeeze-excite
gates. A small model trained briefly is not an ImageNet model: the drops say which layers are fragile,
not what a fine-tuned ImageNet backbone will lose.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecnn.export import export_onnx, quantize  # noqa: E402
from edgecnn.models import list_models, model_info  # noqa: E402
from edgecnn.synth import synthesize  # noqa: E402
from edgecnn.train import TrainConfig, train  # noqa: E402

GATES = ("HardSigmoid", "Sigmoid", "Mul")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="*", default=[n for n in list_models() if model_info(n).weights])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--per-class", type=int, default=100, help="training images per class (4 classes)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "zoo_int8.md")
    args = parser.parse_args()
    cache_path = args.out.with_suffix(".json")
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    work = Path(tempfile.gettempdir()) / "edgecnn-zoo-int8"
    data, held_out = work / f"data-{args.per_class}", work / "eval"
    if not data.exists():
        synthesize(data, classes=4, per_class=args.per_class, size=args.size, seed=0)
        synthesize(held_out, classes=4, per_class=50, size=args.size, seed=7, val_fraction=0.8)
    for arch in args.arch:
        key = f"{arch}-{args.size}-{args.epochs}-{args.per_class}"
        if key in cache:
            continue
        run = work / arch
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        result = train(data, run, TrainConfig(arch=arch, img_size=args.size, epochs=args.epochs, batch_size=16,
                                              device="cpu", calibrate=False), progress=False, cache_dir=None)
        fp32 = export_onnx(run / "best.pt", run / "model.onnx", verify_dir=data / "val")
        row = {"arch": arch, "val_accuracy": result.best_val_accuracy, "train_s": time.perf_counter() - t0,
               "export_max_prob_diff": fp32.max_prob_diff}
        for variant, ops in (("default", ()), ("gates_fp32", GATES)):
            q = quantize(fp32.path, data / "train", run / f"{variant}.int8.onnx", calib_size=64,
                         eval_dir=held_out / "val", force=True, fp32_ops=ops)
            row[variant] = {"fp32_accuracy": q.fp32_accuracy, "int8_accuracy": q.quant_accuracy,
                            "drop_points": 100 * q.accuracy_drop, "agreement": q.agreement, "eval_images": q.eval_images,
                            "size_ratio": q.size_ratio}
        cache[key] = row
        cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        print(json.dumps(row), flush=True)

    lines = [
        "# INT8 on the torchvision zoo: accuracy drop per architecture",
        "",
        f"Measured by `benchmarks/zoo_int8.py` on {platform.machine()}, {os.cpu_count()} cores shared with other "
        f"work. Each architecture trained from scratch on 4 synthetic shape classes ({args.size} px, "
        f"{args.epochs} epochs, {4 * args.per_class} images, 20% of them held for validation); FP32 and INT8 (static QDQ, edgecnn defaults) accuracy on 160 "
        "held-out images; top-1 agreement FP32 vs INT8 on the same images. 'gates FP32': HardSigmoid, Sigmoid "
        "and Mul nodes (hardswish, SiLU, squeeze-excite) kept in float. Not ImageNet backbones (no network "
        "here): read the drops as which layers are fragile.",
        "",
        "| architecture | FP32 acc | INT8 acc | drop (points) | agreement | gates FP32: INT8 acc | drop | agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in cache.items():
        if not key.endswith(f"-{args.size}-{args.epochs}-{args.per_class}"):
            continue
        d, g = r["default"], r["gates_fp32"]
        lines.append(f"| {r['arch']} | {d['fp32_accuracy']:.3f} | {d['int8_accuracy']:.3f} | {d['drop_points']:+.1f} | "
                     f"{d['agreement']:.3f} | {g['int8_accuracy']:.3f} | {g['drop_points']:+.1f} | {g['agreement']:.3f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
