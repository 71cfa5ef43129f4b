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
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import __version__
from . import distributed as D
from . import transfer as T
from .augment import batch_inputs, collate_boxes
from .cache import default_cache_dir
from .checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .data import EvalSet, TrainSet, collate, resolve_dataset, write_split
from .defaults import DEFAULT_ARCH, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_WEIGHT_DECAY
from .fileio import atomic_path, atomic_write_text
from .models import count_macs, count_params, create_model, model_info, validate_size
from .models.inputs import pixels_to_tensor
from .progress import Progress
from .runtime.spec import PreprocessSpec
from .transfer import DEFAULT_BACKBONE_LR, DEFAULT_HEAD_WARMUP, DEFAULT_MIN_STEPS

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainConfig:
    arch: str = DEFAULT_ARCH  # a name from `edgecnn models`
    img_size: int | None = None  # model input side; None = the architecture's default size
    epochs: int | None = None  # passes over the training set; None = DEFAULT_EPOCHS, raised to reach min_steps
    batch_size: int = DEFAULT_BATCH_SIZE  # global batch: split across processes under DDP
    lr: float | None = None  # peak learning rate; None = 2e-3 for AdamW, 0.05 for SGD (scaled by batch/64)
    optimizer: str = "adamw"  # adamw or sgd (momentum 0.9, nesterov)
    weight_decay: float = DEFAULT_WEIGHT_DECAY  # decoupled for AdamW, L2 for SGD; not applied to biases and norms
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay
    label_smoothing: float = 0.1  # softens targets; makes softmax margins honest
    crop_scale: float = 0.7  # smallest area fraction of the random resized crop
    hflip: bool = False  # horizontal flips: off, since they are wrong for text, arrows and hands
    crop_pct: float | None = None  # evaluation crop; None = the architecture's (1.0 keeps the whole shorter side)
    val_split: float = 0.2  # share held out per class when DATA_DIR has no train/ and val/
    seed: int = 0  # one seed for the split, the initial weights, the order and the augmentation
    workers: int = 0  # DataLoader worker processes; 0 loads in the training process (images are cached)
    device: str = "auto"  # auto, cpu or cuda
    amp: bool = False  # CUDA autocast: bfloat16 where supported, else float16 with a grad scaler
    sync_bn: bool = False  # synchronize BatchNorm statistics across processes (DDP only)
    # Starting weights and the few-images recipe (edgecnn.transfer; benchmarks/transfer.py measures the defaults).
    pretrained: bool = False  # start from the architecture's ImageNet weights (torchvision, via the torch hub cache)
    weights: str | None = None  # start from a torchvision-format state_dict file (.pth); the classifier is new
    init: str | None = None  # start from an edgecnn checkpoint of this architecture (other labels: a new classifier)
    freeze_backbone: bool = False  # train the classifier only, all the way (a linear probe); needs starting weights
    head_warmup: float = DEFAULT_HEAD_WARMUP  # share of the steps that train a new classifier alone, backbone frozen
    backbone_lr: float = DEFAULT_BACKBONE_LR  # with starting weights: the backbone's learning rate / the classifier's
    min_steps: int = DEFAULT_MIN_STEPS  # with epochs=None: at least this many optimizer steps (tiny datasets)
    balance: bool = False  # weight the loss by inverse class frequency (composes with DDP's sampler)
    calibrate: bool = True  # after training: fit a softmax temperature on val, fold it into best.pt (and an OOD threshold)
    gpu_augment: str = "auto"  # random crops on the device, batched (auto: when it is CUDA), on, or off (Pillow on the CPU)

    def __post_init__(self) -> None:
        model_info(self.arch)  # raises for an unknown architecture
        checks = [
            (self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (0 <= self.head_warmup < 1, f"head warm-up is a share of the steps in [0, 1), got {self.head_warmup}"),
            (0 < self.backbone_lr <= 1, f"backbone learning rate factor must be in (0, 1], got {self.backbone_lr}"),
            (self.min_steps >= 0, f"min steps must be >= 0, got {self.min_steps}"),
            (sum(map(bool, (self.pretrained, self.weights, self.init))) <= 1,
             "--pretrained, --weights and --init are alternatives: start from one of them"),
            (not self.freeze_backbone or bool(self.pretrained or self.weights or self.init),
             "--freeze-backbone trains only the classifier, which needs starting weights: add --pretrained, "
             "--weights FILE or --init CKPT"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be adamw or sgd, got {self.optimizer!r}"),
            (0 < self.crop_scale <= 1, f"crop scale must be in (0, 1], got {self.crop_scale}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.gpu_augment in ("auto", "on", "off"), f"gpu augment must be auto, on or off, got {self.gpu_augment!r}"),
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


def _data_spec(config: TrainConfig, labels: tuple[str, ...]) -> PreprocessSpec:
    """The preprocessing of this run: the architecture's data config (what its starting weights expect)."""
    info = model_info(config.arch)
    crop_pct = info.crop_pct if config.crop_pct is None else config.crop_pct
    return PreprocessSpec(size=config.size, labels=labels, crop_pct=crop_pct, interpolation=info.interpolation,
                          mean=info.mean, std=info.std)


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
    epochs: int | None = None,
    force: bool = False,
    progress: bool = True,
    cache_dir: str | Path | None = "auto",
) -> TrainResult:
    """Train ``config.arch`` on the ImageFolder ``data_dir``; write checkpoints and metrics into ``run_dir``.

    ``resume`` continues the run in ``run_dir`` from last.pt with its own configuration (only the device
    may change); ``epochs`` then extends it to that many epochs in all, the cosine schedule re-planned
    for the new total from the current step (after a finished run the learning rate rises again to where
    an ``epochs``-long run would be). ``force`` starts a fresh run, deleting the training outputs already
    in ``run_dir`` (RUN_OUTPUTS; other files there are left). ``cache_dir``: where the decoded images are
    cached and memory-mapped, shared by every process ("auto": ``cache.default_cache_dir()``; None: decode
    into each process's memory). Under ``torchrun --max-restarts`` a restarted group resumes from last.pt.
    """
    ctx = D.setup(config.device)
    try:
        return _train(Path(data_dir), Path(run_dir), config, ctx, resume=resume, progress=progress, epochs=epochs,
                      force=force, cache_dir=default_cache_dir() if cache_dir == "auto" else cache_dir)
    finally:
        D.teardown()


# What a run writes into its folder: what --force deletes before a fresh run.
RUN_OUTPUTS = ("last.pt", "best.pt", "metrics.json", "split.json", "curves.png", "report.html", "report",
               "reliability.png")


def _train(data_dir: Path, run_dir: Path, config: TrainConfig, ctx: D.DistContext, *, resume: bool, progress: bool,
           epochs: int | None = None, force: bool = False, cache_dir: str | Path | None = None) -> TrainResult:
    say = progress and ctx.is_main
    last_path = run_dir / "last.pt"
    if D.restart_count() > 0 and last_path.is_file():
        # torchrun restarted the group after a lost process: continue from the last finished epoch (never --force
        # it away), so the run ends as it would have uninterrupted.
        resume, force = True, False
    state: dict[str, Any] | None = None
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
            return TrainResult(run_dir, float(state["best_val_accuracy"]), int(state["best_epoch"]), len(past),
                               0.0, past)
        if wanted != saved.epochs and ctx.is_main:
            print(f"extending {run_dir} from {saved.epochs} to {wanted} epochs (after epoch {done}); the learning rate "
                  f"follows the cosine schedule of a {wanted}-epoch run from here", file=sys.stderr)
        config = replace(saved, device=config.device, epochs=wanted)
    elif ctx.is_main and last_path.exists():
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

    if config.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {ctx.world_size} processes")
    split = resolve_dataset(data_dir, val_split=config.val_split, seed=config.seed)
    spec = _data_spec(config, split.labels)
    if state is not None and tuple(state["spec"]["labels"]) != split.labels:
        raise ValueError(f"{data_dir} has classes {list(split.labels)}, but the run being resumed has {state['spec']['labels']}")
    if not split.val:
        raise ValueError(f"{data_dir}: the validation split is empty")

    if say:
        print(f"data: {len(split.train)} train / {len(split.val)} val images, {len(split.labels)} classes "
              f"({', '.join(split.labels)}), split: {split.split}", file=sys.stderr)
    if ctx.is_main:  # exact copies in both train/ and val/ inflate the validation accuracy: say so before training
        from .datacheck import warn_split_duplicates

        warn_split_duplicates(split)
    # One process per machine decodes into the cache; the others wait for it and map the same pages.
    gpu_augment = config.gpu_augment == "on" or (config.gpu_augment == "auto" and ctx.device.type == "cuda")
    train_set = TrainSet(split.train, spec, seed=config.seed, scale=(config.crop_scale, 1.0), hflip=config.hflip,
                         cache_dir=cache_dir, build=ctx.local_rank == 0, device_augment=gpu_augment)
    val_set = EvalSet(split.val, spec, cache_dir=cache_dir, build=ctx.local_rank == 0)
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError(f"{data_dir}: no readable images left in the {'training' if not len(train_set) else 'validation'} set")

    _seed_everything(config.seed)
    model = create_model(config.arch, num_classes=len(split.labels))
    if state is None:
        start = T.load_start(model, config.arch, split.labels, pretrained=config.pretrained, weights=config.weights,
                             init=config.init)
    else:  # a resumed run's weights come from last.pt; its record of where they started stays
        start = T.StartingPoint.from_dict(state.get("init"))
    counts = T.class_counts(train_set.targets, len(split.labels))
    if ctx.is_main and (warning := T.imbalance_message(split.labels, counts)) and not config.balance:
        log.warning("%s", warning)
    if say:
        if start.has_weights:
            origin = start.weights or (start.parent or {}).get("path") or config.weights
            print(f"starting weights: {start.kind} ({origin}), {'new' if start.new_head else 'kept'} classifier; "
                  + ("classifier only (--freeze-backbone)" if config.freeze_backbone else
                     f"backbone at {config.backbone_lr:g}x the learning rate"
                     + (f" after a classifier-only warm-up ({config.head_warmup:.0%} of the steps)"
                        if start.new_head and config.head_warmup else "")), file=sys.stderr)
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

    def wrap(module: nn.Module) -> nn.Module:
        # DDP registers the parameters that require gradients when it is built: rebuilt when the backbone thaws.
        if not ctx.enabled:
            return module
        return nn.parallel.DistributedDataParallel(module, device_ids=[ctx.device.index] if cuda else None)

    per_rank_batch = config.batch_size // ctx.world_size
    # TrainSet is a map-style dataset by protocol (__len__, __getitem__), not a torch Dataset subclass: data.py
    # does not import torch, and torch's stubs ask for the class where the loader only needs the protocol.
    dataset = cast("Dataset[Any]", train_set)
    sampler: DistributedSampler[int] = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                                          shuffle=True, seed=config.seed)
    loader = DataLoader(
        dataset,
        batch_size=per_rank_batch,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate_boxes if gpu_augment else collate,
        pin_memory=cuda,
        drop_last=len(train_set) >= 2 * config.batch_size,
    )
    steps_per_epoch = len(loader)
    if config.epochs is None:  # a tiny dataset gets enough optimizer steps; the resolved value is what is saved
        config = replace(config, epochs=T.plan_epochs(None, steps_per_epoch=steps_per_epoch, min_steps=config.min_steps,
                                                      default=DEFAULT_EPOCHS))
        assert config.epochs is not None  # resolved just above
        if say and config.epochs > DEFAULT_EPOCHS:
            print(f"{len(train_set)} training images are {steps_per_epoch} step(s) per epoch: training {config.epochs} "
                  f"epochs for at least {config.min_steps} steps (--epochs sets it)", file=sys.stderr)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    # Steps that train the classifier alone: all of them for a linear probe; a warm-up when the classifier is new.
    frozen_steps = total_steps if config.freeze_backbone else (
        round(config.head_warmup * total_steps) if start.has_weights and start.new_head else 0)
    params = T.param_groups(plain, config.arch, lr=config.peak_lr, weight_decay=config.weight_decay,
                            backbone_lr=config.backbone_lr if start.has_weights else 1.0)
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=config.peak_lr, betas=(0.9, 0.999))
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
        "init": start.to_dict(),
    }
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(split, run_dir)
    t_start = time.perf_counter()
    # --balance weights the loss, not the sampling: it composes with the DistributedSampler, and every image
    # is still seen once per epoch (a few images per class would be repeated, not balanced, by a sampler).
    class_weight = torch.tensor(T.class_weights(counts), device=ctx.device) if config.balance else None
    criterion = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=config.label_smoothing)
    step = start_epoch * steps_per_epoch
    T.set_backbone_frozen(plain, config.arch, step < frozen_steps)
    model = wrap(plain)
    for epoch in range(start_epoch, config.epochs):
        # Reseeding per epoch (and per rank, for dropout) makes a resumed run continue as the original would.
        torch.manual_seed(config.seed * 1000 + epoch * 17 + ctx.rank)
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        model.train()
        T.set_backbone_frozen(plain, config.arch, step < frozen_steps)  # train() unfroze the BatchNorm statistics
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", enabled=say)
        t0 = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss * n, correct, n
        for batch in loader:
            if step == frozen_steps and step > 0 and frozen_steps < total_steps:  # the warm-up ends: all layers train
                T.set_backbone_frozen(plain, config.arch, False)
                model = wrap(plain)
                model.train()
            step += 1
            x, y = batch_inputs(batch, spec, ctx.device, channels_last)  # with gpu_augment, crops on the device
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
        D.kill_for_test(ctx, epoch + 1)  # a no-op unless EDGECNN_TEST_KILL_AFTER_EPOCH is set (tests of restarts)

    seconds = time.perf_counter() - t_start
    if ctx.is_main:
        if config.calibrate:  # best.pt is final now: fold the temperature in before the report reads it
            from .calibration import calibrate_after_training

            calibrate_after_training(run_dir, val_set, say=say)
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
