"""A training run's folder: fresh, --force or --resume; the per-epoch checkpoints, metrics.json, curves and report."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import __version__
from . import distributed as D
from .checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .fileio import atomic_path, atomic_write_text
from .runtime.spec import PreprocessSpec
from .train_config import TrainConfig, TrainResult
from .transfer import StartingPoint

log = logging.getLogger(__name__)

# What a run writes into its folder: what --force deletes before a fresh run.
RUN_OUTPUTS = ("last.pt", "best.pt", "metrics.json", "split.json", "curves.png", "report.html", "report",
               "reliability.png")


@dataclass(frozen=True)
class RunStart:
    """Where a run begins: its configuration, last.pt's contents when it resumes, or its result when it is done."""

    config: TrainConfig
    state: dict[str, Any] | None = None  # last.pt of the run being resumed
    finished: TrainResult | None = None  # set when a resumed run has nothing left to train


def open_run(run_dir: Path, config: TrainConfig, ctx: D.DistContext, *, resume: bool, force: bool,
             epochs: int | None, say: bool) -> RunStart:
    """Check ``run_dir`` against --resume/--force/--epochs; load last.pt to resume, or clear the outputs for --force."""
    last_path = run_dir / "last.pt"
    if D.restart_count() > 0 and last_path.is_file():
        # torchrun restarted the group after a lost process: continue from the last finished epoch (never --force
        # it away), so the run ends as it would have uninterrupted.
        resume, force = True, False
    if resume and force:
        raise ValueError("--resume continues the run and --force replaces it: give one of them")
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"{last_path}: nothing to resume (no last.pt in {run_dir})")
        state = load_checkpoint(last_path).data
        # The run continues with the configuration it started with; only the device and the length may change.
        saved = TrainConfig.from_dict(state["train_config"])
        done = int(state["epoch"])
        wanted = saved.epochs if epochs is None else epochs
        assert wanted is not None, "a run saves its epochs resolved"
        if wanted < done:
            raise ValueError(f"{run_dir} has trained {done} epochs already; --epochs {wanted} cannot shorten it "
                             f"(pass --force to start over)")
        if wanted == done:
            if ctx.is_main:
                print(f"{run_dir} is finished: {done} of {saved.epochs} epochs, best val accuracy "
                      f"{float(state['best_val_accuracy']):.4f} at epoch {int(state['best_epoch'])}; nothing to resume. "
                      f"Extend it with --resume --epochs N (N > {done}), or start over with --force", file=sys.stderr)
            past = list(state["history"])
            return RunStart(saved, state, TrainResult(run_dir, float(state["best_val_accuracy"]),
                                                      int(state["best_epoch"]), len(past), 0.0, past))
        if wanted != saved.epochs and ctx.is_main:
            print(f"extending {run_dir} from {saved.epochs} to {wanted} epochs (after epoch {done}); the learning rate "
                  f"follows the cosine schedule of a {wanted}-epoch run from here", file=sys.stderr)
        return RunStart(replace(saved, device=config.device, epochs=wanted), state)
    if ctx.is_main and last_path.exists():
        if not force:
            raise FileExistsError(f"{run_dir} already holds a run (last.pt); pass --resume to continue it (with "
                                  "--epochs N to extend it), --force to start over, or choose another -o")
        for name in RUN_OUTPUTS:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if say:
            print(f"--force: removed the earlier run in {run_dir}", file=sys.stderr)
    return RunStart(config)


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler
            ) -> tuple[list[dict[str, float]], int, float, int]:
    """Load last.pt's weights and optimizer, schedule and scaler states; -> (history, epochs done, best accuracy, best epoch)."""
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return (list(state["history"]), int(state["epoch"]), float(state["best_val_accuracy"]),
            int(state["best_epoch"]))


def checkpoint_base(config: TrainConfig, spec: PreprocessSpec, start: StartingPoint) -> dict[str, Any]:
    """What every checkpoint of the run holds besides its weights: enough to rebuild the model with no flags."""
    return {
        "format": FORMAT,
        "arch": config.arch,
        "model_args": {},
        "spec": spec.to_dict(),
        "train_config": asdict(config),
        "version": __version__,
        "init": start.to_dict(),
    }


def save_epoch(run_dir: Path, base: dict[str, Any], model: nn.Module, *, epoch: int, history: list[dict[str, float]],
               best_acc: float, best_epoch: int, improved: bool, val_acc: float, confusion: Any,
               training_state: dict[str, Any]) -> None:
    """last.pt (with ``training_state``: optimizer, scheduler, scaler), and best.pt when ``improved``."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    common = {**base, "state_dict": weights, "epoch": epoch, "history": history,
              "best_val_accuracy": best_acc, "best_epoch": best_epoch}
    if improved:
        save_checkpoint(run_dir / "best.pt", {**common, "val_accuracy": val_acc, "confusion": confusion.tolist()})
    save_checkpoint(run_dir / "last.pt", {**common, **training_state})


def write_metrics(run_dir: Path, history: list[dict[str, float]], best_acc: float, best_epoch: int,
                  spec: PreprocessSpec, config: TrainConfig, ctx: D.DistContext) -> None:
    metrics = {
        "val_accuracy": best_acc,
        "best_epoch": best_epoch,
        "labels": list(spec.labels),
        "train_loss": [h["train_loss"] for h in history],
        "val_loss": [h["val_loss"] for h in history],
        "val_accuracy_per_epoch": [h["val_accuracy"] for h in history],
        "epochs": history,
        "config": asdict(config),
        "world_size": ctx.world_size,
        "device": ctx.device.type,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")


def write_report(run_dir: Path, val_samples: list, say: bool, cache_dir: str | os.PathLike | None = None) -> None:
    """report.html: curves, confusion, kernels, misclassified examples. A finished training never fails here.

    ``cache_dir``: the validation images are read from training's cache entry rather than decoded again
    (with 6,400 of them at 96 px, that was ~165 MB more private memory at the very end of a run).
    """
    from .report import write_training_report

    try:
        path = write_training_report(run_dir, val_samples=val_samples, cache_dir=cache_dir)
    except (OSError, ValueError) as exc:
        log.warning("training finished, but the report could not be written: %s", exc)
        return
    if say:
        print(f"report: {path}", file=sys.stderr)


def write_curves(run_dir: Path, history: list[dict[str, float]]) -> None:
    from .plot import hstack, line_chart

    epochs = [h["epoch"] for h in history]
    loss = line_chart({"train": [h["train_loss"] for h in history], "val": [h["val_loss"] for h in history]},
                      x=epochs, title="cross-entropy loss", xlabel="epoch", ylabel="loss")
    acc = line_chart({"train": [h["train_accuracy"] for h in history], "val": [h["val_accuracy"] for h in history]},
                     x=epochs, title="accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0.0, 1.0),
                     legend="bottom")
    with atomic_path(run_dir / "curves.png") as tmp:
        hstack([loss, acc]).save(tmp, format="PNG")
