"""Training: cross-entropy, AdamW or SGD with warm-up and a cosine schedule, on one process or under torchrun.

    result = train("data/shapes", "runs/shapes", TrainConfig(epochs=10))
    result.best_val_accuracy

Under ``torchrun --nproc_per_node N -m edgecnn train ...`` the same code runs data-parallel (DDP): the
training set is sharded by a DistributedSampler, ``batch_size`` is the global batch, validation covers
every image once across processes, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from . import __version__
from . import distributed as D
from .checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .data import EvalSet, TrainSet, collate, resolve_dataset, write_split
from .defaults import DEFAULT_ARCH, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_WEIGHT_DECAY
from .fileio import atomic_path, atomic_write_text
from .models import count_macs, count_params, create_model, model_info, validate_size
from .progress import Progress
from .runtime.spec import PreprocessSpec

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainConfig:
    arch: str = DEFAULT_ARCH  # a name from `edgecnn models`
    img_size: int | None = None  # model input side; None = the architecture's default size
    epochs: int = DEFAULT_EPOCHS  # passes over the training set
    batch_size: int = DEFAULT_BATCH_SIZE  # global batch: split across processes under DDP
    lr: float | None = None  # peak learning rate; None = 2e-3 for AdamW, 0.05 for SGD (scaled by batch/64)
    optimizer: str = "adamw"  # adamw or sgd (momentum 0.9, nesterov)
    weight_decay: float = DEFAULT_WEIGHT_DECAY  # decoupled for AdamW, L2 for SGD; not applied to biases and norms
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay
    label_smoothing: float = 0.1  # softens targets; makes softmax margins honest
    crop_scale: float = 0.7  # smallest area fraction of the random resized crop
    hflip: bool = False  # horizontal flips: off, since they are wrong for text, arrows and hands
    crop_pct: float = 1.0  # evaluation crop: 1.0 keeps the whole shorter side
    val_split: float = 0.2  # share held out per class when DATA_DIR has no train/ and val/
    seed: int = 0  # one seed for the split, the initial weights, the order and the augmentation
    workers: int = 0  # DataLoader worker processes; 0 loads in the training process (images are cached)
    device: str = "auto"  # auto, cpu or cuda
    amp: bool = False  # CUDA autocast: bfloat16 where supported, else float16 with a grad scaler
    sync_bn: bool = False  # synchronize BatchNorm statistics across processes (DDP only)

    def __post_init__(self) -> None:
        model_info(self.arch)  # raises for an unknown architecture
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be adamw or sgd, got {self.optimizer!r}"),
            (0 < self.crop_scale <= 1, f"crop scale must be in (0, 1], got {self.crop_scale}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.img_size is not None:
            validate_size(self.img_size)

    @property
    def size(self) -> int:
        return self.img_size or model_info(self.arch).default_size

    @property
    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        base = 2e-3 if self.optimizer == "adamw" else 0.05
        return base * self.batch_size / 64

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**data)


@dataclass
class TrainResult:
    run_dir: Path
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]]


def pixels_to_tensor(pixels: torch.Tensor, spec: PreprocessSpec, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> normalized float NCHW on ``device``; same arithmetic as runtime.normalize."""
    x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)
    x = (x - mean) * inv_std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: EvalSet,
    spec: PreprocessSpec,
    ctx: D.DistContext,
    *,
    batch_size: int = 128,
    channels_last: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> tuple[float, float, np.ndarray]:
    """Loss, accuracy and confusion matrix over the whole set: each process takes every world_size-th image
    and the sums are all-reduced, so every image counts exactly once whatever the number of processes."""
    model.eval()
    n_classes = spec.num_classes
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.float64, device=ctx.device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=ctx.device)
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        pixels = torch.from_numpy(np.stack([dataset.images[i] for i in chunk]))
        targets = torch.as_tensor([dataset.targets[i] for i in chunk], device=ctx.device)
        x = pixels_to_tensor(pixels, spec, ctx.device, channels_last)
        with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
        pred = logits.argmax(1)
        confusion.index_put_((targets, pred), torch.ones_like(targets, dtype=torch.float64), accumulate=True)
    D.all_reduce_sum(confusion, ctx)
    D.all_reduce_sum(loss_sum, ctx)
    total = confusion.sum().item()
    accuracy = confusion.diagonal().sum().item() / total if total else 0.0
    return loss_sum.item() / max(1, total), accuracy, confusion.cpu().numpy().astype(np.int64)


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``config.arch`` on the ImageFolder ``data_dir``; write checkpoints and metrics into ``run_dir``."""
    ctx = D.setup(config.device)
    try:
        return _train(Path(data_dir), Path(run_dir), config, ctx, resume=resume, progress=progress)
    finally:
        D.teardown()


def _train(data_dir: Path, run_dir: Path, config: TrainConfig, ctx: D.DistContext, *, resume: bool, progress: bool) -> TrainResult:
    say = progress and ctx.is_main
    last_path = run_dir / "last.pt"
    state: dict[str, Any] | None = None
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"{last_path}: nothing to resume (no last.pt in {run_dir})")
        state = load_checkpoint(last_path).data
        # The run continues with the configuration it started with; only the device may change.
        config = replace(TrainConfig.from_dict(state["train_config"]), device=config.device)
    elif ctx.is_main and last_path.exists():
        raise FileExistsError(f"{run_dir} already holds a run (last.pt); pass --resume to continue it or choose another -o")

    if config.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {ctx.world_size} processes")
    split = resolve_dataset(data_dir, val_split=config.val_split, seed=config.seed)
    spec = PreprocessSpec(size=config.size, labels=split.labels, crop_pct=config.crop_pct)
    if state is not None and tuple(state["spec"]["labels"]) != split.labels:
        raise ValueError(f"{data_dir} has classes {list(split.labels)}, but the run being resumed has {state['spec']['labels']}")
    if not split.val:
        raise ValueError(f"{data_dir}: the validation split is empty")

    if say:
        print(f"data: {len(split.train)} train / {len(split.val)} val images, {len(split.labels)} classes "
              f"({', '.join(split.labels)}), split: {split.split}", file=sys.stderr)
    train_set = TrainSet(split.train, spec, seed=config.seed, scale=(config.crop_scale, 1.0), hflip=config.hflip)
    val_set = EvalSet(split.val, spec)
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError(f"{data_dir}: no readable images left in the {'training' if not len(train_set) else 'validation'} set")

    _seed_everything(config.seed)
    model = create_model(config.arch, num_classes=len(split.labels))
    if say:
        print(f"model: {config.arch} at {spec.size}x{spec.size}, {count_params(model) / 1e6:.2f} M parameters, "
              f"{count_macs(model, spec.size) / 1e6:.1f} M MACs; device {ctx.device}, {ctx.world_size} process(es), "
              f"{torch.get_num_threads()} thread(s) each", file=sys.stderr)
    cuda = ctx.device.type == "cuda"
    channels_last = cuda
    model.to(ctx.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if config.sync_bn and ctx.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    plain = model
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if cuda else None)

    per_rank_batch = config.batch_size // ctx.world_size
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(
        train_set,
        batch_size=per_rank_batch,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        pin_memory=cuda,
        drop_last=len(train_set) >= 2 * config.batch_size,
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    params = _param_groups(plain, config.weight_decay)
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=config.peak_lr, betas=(0.9, 0.999))
    else:
        optimizer = torch.optim.SGD(params, lr=config.peak_lr, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup_steps))

    amp_dtype: torch.dtype | None = None
    if config.amp:
        if cuda:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            amp_dtype = torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    history: list[dict[str, float]] = []
    start_epoch = 0
    best_acc, best_epoch = -1.0, 0
    if state is not None:
        plain.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        best_acc, best_epoch = float(state["best_val_accuracy"]), int(state["best_epoch"])
        if say:
            print(f"resuming {run_dir} after epoch {start_epoch} (best val accuracy {best_acc:.4f})", file=sys.stderr)

    base = {
        "format": FORMAT,
        "arch": config.arch,
        "model_args": {},
        "spec": spec.to_dict(),
        "train_config": asdict(config),
        "version": __version__,
    }
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(split, run_dir)
    t_start = time.perf_counter()
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    for epoch in range(start_epoch, config.epochs):
        # Reseeding per epoch (and per rank, for dropout) makes a resumed run continue as the original would.
        torch.manual_seed(config.seed * 1000 + epoch * 17 + ctx.rank)
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        model.train()
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", enabled=say)
        t0 = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss * n, correct, n
        for pixels, targets in loader:
            x = pixels_to_tensor(torch.from_numpy(pixels), spec, ctx.device, channels_last)
            y = torch.from_numpy(targets).to(ctx.device, non_blocking=True)
            with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
                loss = criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            with torch.no_grad():
                sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                                     torch.tensor(float(len(y)), dtype=torch.float64, device=ctx.device)])
            bar.update(1, loss=loss.item())
        D.all_reduce_sum(sums, ctx)
        train_seconds = time.perf_counter() - t0
        D.sync_buffers(plain, ctx)
        val_loss, val_acc, confusion = validate(plain, val_set, spec, ctx, channels_last=channels_last, amp_dtype=amp_dtype)
        n_seen = sums[2].item()
        row = {
            "epoch": epoch + 1,
            "train_loss": sums[0].item() / n_seen,
            "train_accuracy": sums[1].item() / n_seen,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "train_images_per_s": n_seen / train_seconds,
        }
        history.append(row)
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch = val_acc, epoch + 1
        bar.close(f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | val loss {val_loss:.4f} "
                  f"acc {val_acc:.4f}{' *' if improved else ''}")
        if ctx.is_main:
            weights = {k: v.detach().cpu() for k, v in plain.state_dict().items()}
            common = {**base, "state_dict": weights, "epoch": epoch + 1, "history": history,
                      "best_val_accuracy": best_acc, "best_epoch": best_epoch}
            if improved:
                save_checkpoint(run_dir / "best.pt", {**common, "val_accuracy": val_acc, "confusion": confusion.tolist()})
            save_checkpoint(last_path, {**common, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                        "scaler": scaler.state_dict()})
            _write_metrics(run_dir, history, best_acc, best_epoch, spec, config, ctx)
        D.barrier(ctx)

    seconds = time.perf_counter() - t_start
    if ctx.is_main:
        _write_curves(run_dir, history)
        _write_report(run_dir, split.val, say)
        if say:
            print(f"best val accuracy {best_acc:.4f} at epoch {best_epoch}; {run_dir / 'best.pt'}", file=sys.stderr)
    D.barrier(ctx)
    return TrainResult(run_dir, best_acc, best_epoch, len(history), seconds, history)


def _write_metrics(run_dir: Path, history: list[dict[str, float]], best_acc: float, best_epoch: int,
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


def _write_report(run_dir: Path, val_samples: list, say: bool) -> None:
    """report.html: curves, confusion, kernels, misclassified examples. A finished training never fails here."""
    from .report import write_training_report

    try:
        path = write_training_report(run_dir, val_samples=val_samples)
    except (OSError, ValueError) as exc:
        log.warning("training finished, but the report could not be written: %s", exc)
        return
    if say:
        print(f"report: {path}", file=sys.stderr)


def _write_curves(run_dir: Path, history: list[dict[str, float]]) -> None:
    from .plot import hstack, line_chart

    epochs = [h["epoch"] for h in history]
    loss = line_chart({"train": [h["train_loss"] for h in history], "val": [h["val_loss"] for h in history]},
                      x=epochs, title="cross-entropy loss", xlabel="epoch", ylabel="loss")
    acc = line_chart({"train": [h["train_accuracy"] for h in history], "val": [h["val_accuracy"] for h in history]},
                     x=epochs, title="accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0.0, 1.0),
                     legend="bottom")
    with atomic_path(run_dir / "curves.png") as tmp:
        hstack([loss, acc]).save(tmp, format="PNG")
