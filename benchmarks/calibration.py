"""Calibration and unknown-input rejection of the shipped INT8 model, on images neither training nor calibration saw.

    .venv/bin/python benchmarks/calibration.py            # writes benchmarks/results/calibration.{md,json}

A three-way split of synthetic data made here (train / val, on which T and the OOD threshold are
fitted / held-out test), plus images of synthetic classes held out of training altogether (unknown
inputs). One run is trained with the defaults (label smoothing 0.1) and --no-calibrate; a copy of it
is calibrated exactly as `edgecnn train` does (calibration_run.calibrate_run on the val set). Both are
exported and quantized to INT8 and scored through the runtime's onnxruntime session: accuracy, ECE
(15 bins), NLL on the test split; and post-hoc `edgecnn calibrate` of the uncalibrated INT8 file.
For unknown inputs: AUROC of energy, max logit and max softmax probability on held-out classes against
the test split, and the share rejected at the stored threshold (95% validation recall).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "calibration"
IN_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
OUT_CLASSES = ("hexagon", "arrow", "stripes", "checker")  # never seen in training: the unknown inputs
SPLITS = {"train": 500, "val": 150, "test": 400}  # images per class
OOD_PER_CLASS = 250


def make_data(root: Path, size: int) -> None:
    from edgecnn.synth import render

    if (root / "done").is_file():
        return
    for offset, (split, n) in enumerate(SPLITS.items()):
        for c, name in enumerate(IN_CLASSES):
            folder = root / ("data/" + split if split != "test" else "test") / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                render(name, size, np.random.default_rng([7, offset, c, i])).save(folder / f"{i:05d}.png", compress_level=1)
    for c, name in enumerate(OUT_CLASSES):
        folder = root / "unknown" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(OOD_PER_CLASS):
            render(name, size, np.random.default_rng([7, 9, c, i])).save(folder / f"{i:05d}.png", compress_level=1)
    (root / "done").write_text("ok\n")


def outputs(model: Path, folder: Path, labels: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, probabilities and targets of the ONNX ``model`` (the runtime's session) on a class-folder tree."""
    from edgecnn.data import EvalSet, class_samples
    from edgecnn.runtime import Classifier
    from edgecnn.runtime.preprocess import to_model_input

    clf = Classifier(model, device="cpu")
    if labels is None:
        samples = [(p, 0) for p in sorted(folder.rglob("*.png"))]
    else:
        _, samples = class_samples(folder, clf.labels)
    data = EvalSet(samples, clf.spec)
    logits, probs = [], []
    for start in range(0, len(data), 256):
        feed = to_model_input(np.stack(data.images[start : start + 256]), clf.spec, layout=clf.input_layout, dtype=clf.input_dtype)
        z, p = clf.session.run(["logits", "probabilities"], {clf.input_name: feed})
        logits.append(z)
        probs.append(p)
    return np.concatenate(logits).astype(np.float64), np.concatenate(probs).astype(np.float64), np.asarray(data.targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet8")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "calibration.md")
    args = parser.parse_args()

    from edgecnn.calibration import ECE_BINS, auroc, expected_calibration_error, nll_from_probs
    from edgecnn.calibration_onnx import calibrate_onnx
    from edgecnn.calibration_run import calibrate_run
    from edgecnn.data import EvalSet, resolve_dataset
    from edgecnn.export import export_onnx, quantize
    from edgecnn.runtime import Classifier
    from edgecnn.runtime.decode import OodRule, ood_score
    from edgecnn.runtime.spec import META_OOD
    from edgecnn.train import TrainConfig, train

    t0 = time.perf_counter()
    root = CACHE / f"s{args.size}"
    make_data(root, args.size)
    work = CACHE / f"{args.arch}-{args.size}-{args.epochs}"
    raw_run, cal_run = work / "raw", work / "calibrated"
    if not (raw_run / "best.pt").is_file():
        shutil.rmtree(work, ignore_errors=True)
        train(root / "data", raw_run, TrainConfig(arch=args.arch, img_size=args.size, epochs=args.epochs, device="cpu",
                                                  calibrate=False), progress=False)
    train_seconds = time.perf_counter() - t0
    shutil.rmtree(cal_run, ignore_errors=True)
    shutil.copytree(raw_run, cal_run)
    from edgecnn.checkpoint import load_checkpoint

    spec = load_checkpoint(raw_run / "best.pt").spec
    val_set = EvalSet(resolve_dataset(root / "data").val, spec)
    fit = calibrate_run(cal_run, val_set)
    assert fit is not None

    models: dict[str, Path] = {}
    for name, run in (("uncalibrated", raw_run), ("calibrated", cal_run)):
        fp32 = export_onnx(run / "best.pt", work / f"{name}.onnx").path
        models[name] = work / f"{name}.int8.onnx"
        quantize(fp32, root / "data" / "train", models[name], eval_dir=root / "data" / "val")
    posthoc = calibrate_onnx(models["uncalibrated"], root / "data" / "val", work / "posthoc.int8.onnx")
    models["uncalibrated + edgecnn calibrate"] = posthoc.path

    rows = []
    ood_rows = []
    for name, path in models.items():
        z, p, y = outputs(path, root / "test", spec.labels)
        zo, po, _ = outputs(path, root / "unknown", None)
        rule_text = Classifier(path, device="cpu").metadata.get(META_OOD)
        rows.append({"model": name, "accuracy": float((p.argmax(1) == y).mean()),
                     "confidence": float(p.max(1).mean()), "ece": expected_calibration_error(p, y),
                     "nll": nll_from_probs(p, y), "n": len(y)})
        if rule_text:
            rule = OodRule.from_dict(json.loads(rule_text))
            row = {"model": name, "score": rule.score, "threshold": rule.threshold,
                   "rejected_test": float((ood_score(z, rule.score) > rule.threshold).mean()),
                   "rejected_unknown": float((ood_score(zo, rule.score) > rule.threshold).mean()),
                   "n_test": len(z), "n_unknown": len(zo)}
            for score in ("energy", "max_logit", "max_prob"):
                row[f"auroc_{score}"] = auroc(ood_score(z, score), ood_score(zo, score))
            ood_rows.append(row)

    result = {"arch": args.arch, "size": args.size, "epochs": args.epochs, "bins": ECE_BINS, "fit": fit.to_dict(),
              "splits": SPLITS, "in_classes": IN_CLASSES, "unknown_classes": OUT_CLASSES, "unknown_per_class": OOD_PER_CLASS,
              "rows": rows, "ood": ood_rows, "posthoc_temperature": posthoc.result.temperature,
              "train_seconds": train_seconds, "seconds": time.perf_counter() - t0, "machine": platform.machine(),
              "processor": platform.processor() or platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.write_text(render(result))
    print(args.out.read_text())


def render(r: dict) -> str:
    fit = r["fit"]
    lines = [
        "# Calibration and unknown inputs of the shipped INT8 model",
        "",
        f"Made by `benchmarks/calibration.py`: {r['arch']} at {r['size']} px, {r['epochs']} epochs with the training "
        f"defaults (label smoothing 0.1), on synthetic data made by the script: {len(r['in_classes'])} classes "
        f"({', '.join(r['in_classes'])}) split three ways per class: {r['splits']['train']} train, "
        f"{r['splits']['val']} val (the temperature and the unknown-input threshold are fitted here), "
        f"{r['splits']['test']} test (seen by neither). Unknown inputs: {r['unknown_per_class']} images each of "
        f"{len(r['unknown_classes'])} classes held out of training ({', '.join(r['unknown_classes'])}).",
        "All figures are on the test split or the unknown images, through the INT8 model in onnxruntime (the runtime's "
        f"session); ECE over {r['bins']} equal-width bins.",
        "",
        f"Temperature fitted on val: T = {fit['temperature']:.3f} (val ECE {fit['ece_before']:.4f} -> {fit['ece_after']:.4f}, "
        f"NLL {fit['nll_before']:.4f} -> {fit['nll_after']:.4f}). `edgecnn calibrate` on the uncalibrated INT8 file "
        f"fitted T = {r['posthoc_temperature']:.3f}.",
        "",
        "| INT8 model | test accuracy | mean confidence | ECE | NLL |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['accuracy']:.4f} | {row['confidence']:.4f} | {row['ece']:.4f} | {row['nll']:.4f} |")
    lines += [
        "",
        "Unknown inputs (held-out classes against the test split). AUROC: 1.0 separates them perfectly, 0.5 is chance. "
        "Rejected: share flagged `unknown` at the threshold stored in the model (picked for 95% recall on val).",
        "",
        "| INT8 model | AUROC energy | AUROC max logit | AUROC max prob | stored rule | rejected: test | rejected: unknown |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in r["ood"]:
        lines.append(f"| {row['model']} | {row['auroc_energy']:.4f} | {row['auroc_max_logit']:.4f} | {row['auroc_max_prob']:.4f} | "
                     f"{row['score']} > {row['threshold']:.3f} | {row['rejected_test']:.1%} | {row['rejected_unknown']:.1%} |")
    lines += ["", f"Machine: {r['processor']}; the whole benchmark took {r['seconds']:.0f} s "
              f"(training {r['train_seconds']:.0f} s).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
