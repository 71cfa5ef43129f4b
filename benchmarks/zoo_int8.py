"""INT8 on every torchvision zoo architecture: how far INT8 moves the answers, with and without the gates in FP32.

    python benchmarks/zoo_int8.py                        # fidelity at the default size; writes results/zoo_int8.md
    python benchmarks/zoo_int8.py --trained              # + accuracy of models trained from scratch (hours here)
    python benchmarks/zoo_int8.py --arch mobilenet_v3_small --size 160

No ImageNet weights here (no network), so two stand-ins, each with its limits:
- Fidelity (default): each architecture at its default size with random weights, BatchNorm statistics taken
  from the calibration images and a classifier scaled so that its answers vary from image to image,
  exported and quantized with edgecnn's defaults (static QDQ, per-channel, MinMax, 64 calibration images);
  then FP32 and INT8 run on 200 other images: top-1 agreement and the mean and largest change of a class
  probability. It measures the quantization error of the architecture's layers, not an accuracy.
- Trained (--trained): trained from scratch on 4 synthetic shape classes, then FP32 and INT8 accuracy on
  held-out images. Small models trained briefly are weak (efficientnet_b0 reached 0.39 at 64 px against a
  chance of 0.25), and each takes about 25 minutes on 2 shared cores.
"Gates FP32" keeps the HardSigmoid/Sigmoid and Mul nodes in float: hardswish (x * hardsigmoid(x), which
onnxruntime's pre-processing decomposes into those two), SiLU and the squeeze-excite gates.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecnn.export import export_onnx, quantize  # noqa: E402
from edgecnn.models import list_models, model_info  # noqa: E402
from edgecnn.synth import synthesize  # noqa: E402

GATES = ("HardSigmoid", "Sigmoid", "Mul")
VARIANTS = (("default", ()), ("gates_fp32", GATES))
LABELS = ("a", "b", "c", "d", "e")


def random_checkpoint(path: Path, arch: str, size: int, pixels: np.ndarray, seed: int = 0) -> None:
    """An untrained checkpoint whose answers vary from image to image, as a trained one's do.

    A deep network with random weights and default BatchNorm statistics maps every image to nearly the same
    features (one class for all, and answers decided by rounding noise). Here the BatchNorm statistics are
    those of ``pixels`` (one pass in training mode, as at the start of training), so every layer sees
    normalized activations, and the classifier is drawn and scaled so that its logits spread by about 3.
    """
    import torch

    from edgecnn.checkpoint import FORMAT, save_checkpoint
    from edgecnn.models import create_model
    from edgecnn.models.inputs import pixels_to_tensor
    from edgecnn.runtime.spec import PreprocessSpec

    torch.manual_seed(seed)
    info = model_info(arch)
    spec = PreprocessSpec(size=size, labels=LABELS, crop_pct=info.crop_pct, interpolation=info.interpolation,
                          mean=info.mean, std=info.std)
    model = create_model(arch, num_classes=len(LABELS))
    head = model.get_submodule(info.classifier)
    assert isinstance(head, torch.nn.Linear), head
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: the statistics of exactly these images
    features: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, args, out: features.append(args[0]))
    x = pixels_to_tensor(torch.from_numpy(pixels), spec, torch.device("cpu"))
    with torch.no_grad():
        model.train()(x)
        features.clear()
        model.eval()(x)
        hook.remove()
        f = features[0]
        weight = torch.randn(head.out_features, head.in_features) / head.in_features ** 0.5
        weight *= 3.0 / ((f - f.mean(0)) @ weight.T).std()
        head.weight.copy_(weight)
        head.bias.copy_(-(weight @ f.mean(0)))
    save_checkpoint(path, {"format": FORMAT, "arch": arch, "model_args": {}, "spec": spec.to_dict(),
                           "state_dict": model.state_dict()})


def fidelity(arch: str, size: int, work: Path, images: Path) -> dict:
    from edgecnn.runtime import Classifier
    from edgecnn.runtime.preprocess import preprocess
    from edgecnn.runtime.spec import PreprocessSpec

    run = work / f"fidelity-{arch}-{size}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    info = model_info(arch)
    spec = PreprocessSpec(size=size, crop_pct=info.crop_pct, interpolation=info.interpolation)
    calib = np.stack([preprocess(f, spec) for f in sorted((images / "train").rglob("*.png"))])
    random_checkpoint(run / "init.pt", arch, size, calib)  # the classifier fitted on the calibration images only
    # The stand-in's logits are scaled up, and so are float rounding differences: parity to 1e-3, not 1e-4.
    fp32 = export_onnx(run / "init.pt", run / "model.onnx", tolerance=1e-3)
    ref = Classifier(fp32.path, device="cpu")
    files = sorted((images / "val").rglob("*.png"))
    pixels = np.stack([preprocess(f, ref.spec) for f in files])
    p32 = ref.predict_pixels(pixels)
    row: dict = {"arch": arch, "size": size, "images": len(files), "fp32_top1_share": float(np.bincount(
        p32.argmax(1), minlength=len(LABELS)).max() / len(files))}
    for variant, ops in VARIANTS:
        q = quantize(fp32.path, images / "train", run / f"{variant}.int8.onnx", calib_size=64, force=True,
                     fp32_ops=ops, speed_seconds=0)
        p8 = Classifier(q.path, device="cpu").predict_pixels(pixels)
        change = np.abs(p8 - p32).max(1)
        row[variant] = {"agreement": float((p8.argmax(1) == p32.argmax(1)).mean()), "mean_dp": float(change.mean()),
                        "max_dp": float(change.max()), "size_ratio": q.size_ratio}
    return row


def trained(arch: str, size: int, epochs: int, data: Path, held_out: Path, work: Path) -> dict:
    from edgecnn.train import TrainConfig, train

    run = work / f"trained-{arch}-{size}"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    result = train(data, run, TrainConfig(arch=arch, img_size=size, epochs=epochs, batch_size=16, device="cpu",
                                          calibrate=False), progress=False, cache_dir=None)
    fp32 = export_onnx(run / "best.pt", run / "model.onnx", verify_dir=data / "val")
    row = {"arch": arch, "val_accuracy": result.best_val_accuracy, "train_s": time.perf_counter() - t0}
    for variant, ops in VARIANTS:
        q = quantize(fp32.path, data / "train", run / f"{variant}.int8.onnx", calib_size=64,
                     eval_dir=held_out / "val", force=True, fp32_ops=ops, speed_seconds=0)
        assert q.fp32_accuracy is not None and q.quant_accuracy is not None and q.accuracy_drop is not None
        row[variant] = {"fp32_accuracy": q.fp32_accuracy, "int8_accuracy": q.quant_accuracy,
                        "drop_points": 100 * q.accuracy_drop, "agreement": q.agreement, "eval_images": q.eval_images}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="*", default=[n for n in list_models() if model_info(n).weights])
    parser.add_argument("--size", type=int, default=None, help="input size (default: each architecture's)")
    parser.add_argument("--trained", action="store_true", help="also train each from scratch (slow)")
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "zoo_int8.md")
    args = parser.parse_args()
    cache_path = args.out.with_suffix(".json")
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    work = Path(tempfile.gettempdir()) / "edgecnn-zoo-int8"

    def save() -> None:
        cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")

    for arch in args.arch:
        size = args.size or model_info(arch).default_size
        key = f"fidelity-{arch}-{size}"
        if key not in cache:
            images = work / f"images-{size}"
            if not images.exists():  # 64 calibration images in train/, 200 others in val/
                synthesize(images, classes=4, per_class=66, size=size, seed=3, val_fraction=0.76)
            cache[key] = fidelity(arch, size, work, images)
            save()
            print(json.dumps(cache[key]), flush=True)
    if args.trained:
        data, held_out = work / "data-100", work / "eval"
        if not data.exists():
            synthesize(data, classes=4, per_class=100, size=args.train_size, seed=0)
        if not held_out.exists():
            synthesize(held_out, classes=4, per_class=50, size=args.train_size, seed=7, val_fraction=0.8)
        for arch in args.arch:
            key = f"{arch}-{args.train_size}-{args.epochs}-100"  # the key of the rows measured so far
            if key not in cache:
                cache[key] = trained(arch, args.train_size, args.epochs, data, held_out, work)
                save()
                print(json.dumps(cache[key]), flush=True)

    lines = [
        "# INT8 on the torchvision zoo: how far INT8 moves the answers, per architecture",
        "",
        f"Measured by `benchmarks/zoo_int8.py` on {platform.machine()}, {os.cpu_count()} cores. Static QDQ with "
        "edgecnn's defaults (per-channel, MinMax, 64 calibration images); 'gates FP32': HardSigmoid, Sigmoid and Mul "
        "nodes (hardswish, SiLU, squeeze-excite) kept in float. No ImageNet weights here (no network): read these "
        "as which layers are fragile, not as what a fine-tuned ImageNet backbone will lose.",
        "",
        "## Fidelity at the default size (random weights, BatchNorm statistics drawn)",
        "",
        "FP32 and INT8 on 200 synthetic images not used for calibration: top-1 agreement, and the change of the "
        "largest class probability per image (mean and worst). 'top-1 share': the largest share of the 200 images "
        "that the FP32 model gives one class (near 1.0 would make agreement meaningless).",
        "",
        "| architecture | size | top-1 share | agreement | mean dp | max dp | gates FP32: agreement | mean dp | max dp |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in sorted(cache.items()):
        if key.startswith("fidelity-"):
            d, g = r["default"], r["gates_fp32"]
            lines.append(f"| {r['arch']} | {r['size']} | {r['fp32_top1_share']:.2f} | {d['agreement']:.3f} | "
                         f"{d['mean_dp']:.4f} | {d['max_dp']:.3f} | {g['agreement']:.3f} | {g['mean_dp']:.4f} | "
                         f"{g['max_dp']:.3f} |")
    rows = [(k, r) for k, r in sorted(cache.items()) if not k.startswith("fidelity-") and k.endswith("-100")]
    if rows:
        lines += ["", "## Trained from scratch (`--trained`)", "",
                  "4 synthetic shape classes, 400 images (20% for validation), 15 epochs at 64 px; FP32 and INT8 accuracy "
                  "on 160 held-out images.", "",
                  "| architecture | FP32 val acc | FP32 acc | INT8 acc | drop (points) | agreement | gates FP32: INT8 acc "
                  "| drop | agreement |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for _, r in rows:
            d, g = r["default"], r["gates_fp32"]
            lines.append(f"| {r['arch']} | {r['val_accuracy']:.3f} | {d['fp32_accuracy']:.3f} | {d['int8_accuracy']:.3f} | "
                         f"{d['drop_points']:+.1f} | {d['agreement']:.3f} | {g['int8_accuracy']:.3f} | "
                         f"{g['drop_points']:+.1f} | {g['agreement']:.3f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
