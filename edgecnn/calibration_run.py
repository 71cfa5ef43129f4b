"""Calibrating a trained PyTorch model: the temperature folded into its last nn.Linear, best.pt rewritten.

    calibrate_run("runs/shapes", val_set)                 # after training: fold T into best.pt, record it

Folding 1/T into the final nn.Linear (weight and bias) means export, INT8 quantization and the runtime
need no change. torch is imported inside the functions that touch a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import (
    DEFAULT_OOD_SCORE,
    DEFAULT_RECALL,
    ECE_BINS,
    CalibrationResult,
    fit_temperature,
    summarize,
)
from .calibration_plot import reliability_diagram
from .runtime.decode import softmax

if TYPE_CHECKING:
    import torch.nn as nn

    from .data import EvalSet


def last_linear(model: nn.Module, size: int) -> tuple[str, nn.Linear]:
    """The nn.Linear whose output is the model's output (the logits), found by running the model once.

    Generic over edgecnn's families (``head.fc``) and torchvision's (``classifier[-1]``, ``fc``): every
    Linear is hooked and the one whose output tensor *is* the returned tensor wins, so a Linear inside
    an attention or squeeze-excitation block can never be mistaken for the head.
    """
    import torch
    import torch.nn as nn

    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(torch.zeros(2, 3, size, size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, out in outputs.items():
        if out is result or (out.data_ptr() == result.data_ptr() and out.shape == result.shape):
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            return name, linear
    raise ValueError(f"{type(model).__name__}: its logits do not come straight from an nn.Linear, so a temperature "
                     "cannot be folded into it; train with --no-calibrate and calibrate the ONNX file instead "
                     "(`edgecnn calibrate`)")


def fold_temperature(model: nn.Module, temperature: float, size: int) -> str:
    """Divide the last Linear's weight and bias by ``temperature`` in place: logits become logits / T."""
    import torch

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    name, linear = last_linear(model, size)
    with torch.no_grad():
        linear.weight.div_(temperature)
        if linear.bias is not None:
            linear.bias.div_(temperature)
    return name


def model_logits(model: nn.Module, images: Sequence[np.ndarray] | np.ndarray, spec: Any, *, batch_size: int = 128) -> np.ndarray:
    """(N, classes) float64 logits of ``model`` for uint8 NHWC pixels, on the CPU in eval mode."""
    import torch

    from .models.inputs import pixels_to_tensor

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = torch.from_numpy(np.stack(list(images[start : start + batch_size])))
            out.append(model(pixels_to_tensor(pixels, spec, device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, spec.num_classes))


def calibrate_run(run_dir: str | os.PathLike, val_set: EvalSet, *, recall: float = DEFAULT_RECALL,
                  score: str = DEFAULT_OOD_SCORE, say: Callable[[str], None] | None = None) -> CalibrationResult | None:
    """Fit T on ``val_set`` (the validation images training used), fold it into RUN_DIR/best.pt, record it.

    best.pt is rewritten atomically with the folded weights and a ``calibration`` entry (and ``ood``,
    the unknown-input rule, which export copies into the ONNX metadata); metrics.json gains the same
    ``calibration`` entry and RUN_DIR/reliability.png shows the reliability diagram before and after.
    A best.pt that is already calibrated (a resumed, finished run) is left alone: returns None.
    """
    from .checkpoint import load_checkpoint, save_checkpoint
    from .fileio import atomic_path, atomic_write_text
    from .plot import hstack

    run = Path(run_dir)
    best = run / "best.pt"
    ckpt = load_checkpoint(best)
    if "calibration" in ckpt.data:
        return None
    spec = ckpt.spec
    model = ckpt.build_model()
    logits = model_logits(model, val_set.images, spec)
    targets = np.asarray(val_set.targets, dtype=np.int64)
    temperature = fit_temperature(logits, targets)
    result = summarize(logits, targets, temperature, recall=recall, score=score)
    layer = fold_temperature(model, temperature, spec.size)

    folded = model_logits(model, val_set.images, spec)
    # The folded model must give exactly the scaled logits (float32 rounding aside), or nothing is written.
    assert np.allclose(folded, logits / temperature, rtol=1e-4, atol=1e-4), "folding the temperature changed the model"
    record = {k: v for k, v in result.to_dict().items() if k != "ood"} | {"layer": layer}
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(best, {**ckpt.data, "state_dict": weights, "calibration": record, "ood": result.ood})

    metrics_path = run / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["calibration"] = record
        metrics["ood"] = result.ood
        atomic_write_text(metrics_path, json.dumps(metrics, indent=1) + "\n")
    probs_before, probs_after = softmax(logits), softmax(logits / temperature)
    with atomic_path(run / "reliability.png") as tmp:
        hstack([reliability_diagram(probs_before, targets, title=f"before (T = 1), ECE {result.ece_before:.3f}"),
                reliability_diagram(probs_after, targets, title=f"after (T = {temperature:.3f}), ECE {result.ece_after:.3f}")]
               ).save(tmp, format="PNG")
    if say:
        say(f"calibration: T = {temperature:.3f} on {result.n} validation images; ECE {result.ece_before:.4f} -> "
            f"{result.ece_after:.4f}, NLL {result.nll_before:.4f} -> {result.nll_after:.4f} ({ECE_BINS} bins); "
            f"unknown-input threshold: {score} > {(result.ood or {}).get('threshold', 0.0):.3f} ({recall:.0%} recall)")
    return result


def calibrate_after_training(run_dir: str | os.PathLike, val_set: EvalSet, *, say: bool = True) -> CalibrationResult | None:
    """The step `edgecnn train` runs last (TrainConfig.calibrate): calibrate_run, and a finished training never
    fails here: a model whose logits cannot take a folded temperature keeps its weights, with a warning."""
    import logging
    import sys

    try:
        return calibrate_run(run_dir, val_set, say=(lambda line: print(line, file=sys.stderr)) if say else None)
    except ValueError as exc:
        logging.getLogger(__name__).warning("training finished, but was not calibrated: %s", exc)
        return None
