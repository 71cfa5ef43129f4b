"""The training loop: cross-entropy over the data, validation each epoch, on one process or under torchrun.

    result = train("data/shapes", "runs/shapes", TrainConfig(epochs=10))
    result.best_val_accuracy

Under ``torchrun --nproc_per_node N -m edgecnn train ...`` the same code runs data-parallel (DDP): the
training set is sharded by a DistributedSampler, ``batch_size`` is the global batch, validation covers
every image once across processes, and only rank 0 writes files. The options are train_config.py's, the
optimizer and schedule schedule.py's, the run folder (resume, checkpoints, outputs) run_dir.py's.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as D
from . import transfer as T
from .augment import batch_inputs, collate_boxes
from .cache import default_cache_dir
from .data import EvalSet, TrainSet, collate, resolve_dataset, write_split
from .defaults import DEFAULT_EPOCHS
from .models import count_macs, count_params, create_model
from .models.inputs import pixels_to_tensor
from .progress import Progress
from .run_dir import checkpoint_base, open_run, restore, save_epoch, write_curves, write_metrics, write_report
from .runtime.spec import PreprocessSpec
from .schedule import autocast_dtype, frozen_step_count, grad_scaler, make_optimizer
from .train_config import TrainConfig, TrainResult, data_spec

log = logging.getLogger(__name__)


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
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen: a shared default cannot change)
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
    in ``run_dir`` (run_dir.RUN_OUTPUTS; other files there are left). ``cache_dir``: where the decoded images are
    cached and memory-mapped, shared by every process ("auto": ``cache.default_cache_dir()``; None: decode
    into each process's memory). Under ``torchrun --max-restarts`` a restarted group resumes from last.pt.
    """
    ctx = D.setup(config.device)
    try:
        return _train(Path(data_dir), Path(run_dir), config, ctx, resume=resume, progress=progress, epochs=epochs,
                      force=force, cache_dir=default_cache_dir() if cache_dir == "auto" else cache_dir)
    finally:
        D.teardown()


def _train(data_dir: Path, run_dir: Path, config: TrainConfig, ctx: D.DistContext, *, resume: bool, progress: bool,
           epochs: int | None = None, force: bool = False, cache_dir: str | Path | None = None) -> TrainResult:
    say = progress and ctx.is_main
    opened = open_run(run_dir, config, ctx, resume=resume, force=force, epochs=epochs, say=say)
    if opened.finished is not None:
        return opened.finished
    config, state = opened.config, opened.state

    if config.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {ctx.world_size} processes")
    split = resolve_dataset(data_dir, val_split=config.val_split, seed=config.seed)
    spec = data_spec(config, split.labels)
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
    frozen_steps = frozen_step_count(config, total_steps, has_weights=start.has_weights, new_head=start.new_head)
    params = T.param_groups(plain, config.arch, lr=config.peak_lr, weight_decay=config.weight_decay,
                            backbone_lr=config.backbone_lr if start.has_weights else 1.0)
    optimizer, scheduler = make_optimizer(params, config, total_steps=total_steps, warmup_steps=warmup_steps)
    amp_dtype = autocast_dtype(config.amp, cuda)
    scaler = grad_scaler(amp_dtype)

    history: list[dict[str, float]] = []
    start_epoch = 0
    best_acc, best_epoch = -1.0, 0
    if state is not None:
        history, start_epoch, best_acc, best_epoch = restore(state, plain, optimizer, scheduler, scaler)
        if say:
            print(f"resuming {run_dir} after epoch {start_epoch} (best val accuracy {best_acc:.4f})", file=sys.stderr)

    base = checkpoint_base(config, spec, start)
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
            save_epoch(run_dir, base, plain, epoch=epoch + 1, history=history, best_acc=best_acc, best_epoch=best_epoch,
                       improved=improved, val_acc=val_acc, confusion=confusion,
                       training_state={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                       "scaler": scaler.state_dict()})
            write_metrics(run_dir, history, best_acc, best_epoch, spec, config, ctx)
        D.barrier(ctx)
        D.kill_for_test(ctx, epoch + 1)  # a no-op unless EDGECNN_TEST_KILL_AFTER_EPOCH is set (tests of restarts)

    seconds = time.perf_counter() - t_start
    if ctx.is_main:
        if config.calibrate:  # best.pt is final now: fold the temperature in before the report reads it
            from .calibration_run import calibrate_after_training

            calibrate_after_training(run_dir, val_set, say=say)
        write_curves(run_dir, history)
        write_report(run_dir, split.val, say, cache_dir=cache_dir)
        if say:
            print(f"best val accuracy {best_acc:.4f} at epoch {best_epoch}; {run_dir / 'best.pt'}", file=sys.stderr)
    D.barrier(ctx)
    return TrainResult(run_dir, best_acc, best_epoch, len(history), seconds, history)


__all__ = ["TrainConfig", "TrainResult", "train", "validate"]
