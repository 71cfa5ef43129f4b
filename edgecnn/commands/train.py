"""`edgecnn train`: options mapped to TrainConfig and one call of edgecnn.train.train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from ..defaults import DEFAULT_ARCH, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_WEIGHT_DECAY
from ..transfer import DEFAULT_BACKBONE_LR, DEFAULT_HEAD_WARMUP, DEFAULT_MIN_STEPS

RESTART_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder for best.pt, last.pt, metrics.json, curves.png, report.html. Default: runs/<DATA_DIR name>.")
@click.option("--arch", default=DEFAULT_ARCH, show_default=True, help="Architecture; see `edgecnn models`.")
@click.option("--img-size", type=int, default=None, help="Input side, a multiple of 8. Default: the architecture's.")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help=f"Passes over the training set.  [default: {DEFAULT_EPOCHS}, or more where that is under "
                   f"{DEFAULT_MIN_STEPS} optimizer steps: a small dataset gets at least {DEFAULT_MIN_STEPS}]")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help=f"GLOBAL batch size: under N processes each takes batch/N.  [default: {DEFAULT_BATCH_SIZE}]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate. Default: by optimizer and batch.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=None, help=f"[default: {DEFAULT_WEIGHT_DECAY}]")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Held-out share per class when DATA_DIR has no train/ and val/.")
@click.option("--hflip/--no-hflip", default=False, show_default=True, help="Random horizontal flips (wrong for text, arrows).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--cache-dir", default=None, metavar="DIR|none",
              help="Where the decoded images are cached once and memory-mapped, shared by every process and epoch "
                   "(rebuilt when the files change). 'none': decode into each process's memory. "
                   "Default: $EDGECNN_CACHE_DIR, or ~/.cache/edgecnn/datasets (honouring $XDG_CACHE_HOME).")
@click.option("--gpu-augment", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Random crops on the device, the whole batch at once (auto: on CUDA); off: Pillow on the CPU.")
@click.option("--pretrained", is_flag=True,
              help="Start from the architecture's ImageNet weights (torchvision models; downloaded once into the torch "
                   "hub cache). Offline: --weights FILE.")
@click.option("--weights", "weights_file", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="Start from a torchvision-format state_dict (.pth, e.g. the file --pretrained downloads, copied "
                   "here); the classifier is replaced for DATA_DIR's classes.")
@click.option("--init", "init_ckpt", type=click.Path(exists=True, dir_okay=False), default=None, metavar="CKPT",
              help="Start from an earlier edgecnn checkpoint (its architecture and input size unless given). Same "
                   "classes: training continues on the new data; other classes: its backbone under a new classifier.")
@click.option("--freeze-backbone", is_flag=True,
              help="With starting weights: train only the classifier (a linear probe): fast, and the right call for a "
                   f"handful of images per class. Default: the classifier alone for the first {DEFAULT_HEAD_WARMUP:.0%} "
                   f"of the steps, then every layer, the backbone at {DEFAULT_BACKBONE_LR:g}x the learning rate.")
@click.option("--balance", is_flag=True,
              help="Weight the loss by inverse class frequency, for imbalanced classes (a warning says when). A "
                   "weighted loss, not a resampler: every image is still seen once per epoch, and it composes with "
                   "the data-parallel sampler.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--amp", is_flag=True, help="Mixed precision (CUDA: bfloat16, or float16 with loss scaling).")
@click.option("--sync-bn", is_flag=True, help="Synchronize BatchNorm statistics across processes.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="After training, fit a softmax temperature on val and fold it into best.pt (honest probabilities).")
@click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
              help="Data-parallel processes on this machine, started through torch.distributed.run.")
@click.option("--max-restarts", type=click.IntRange(0), default=0, show_default=True,
              help="When a process dies, torchrun restarts the group up to N times; the restart resumes from last.pt.")
@click.option("--resume", is_flag=True,
              help="Continue the run in RUN_DIR from last.pt, with its own settings; --epochs N extends it to N epochs.")
@click.option("--force", is_flag=True, help="Start a fresh run in RUN_DIR, deleting the run already there.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def train(data_dir: Path, run_dir: Path | None, arch: str, img_size: int | None, epochs: int | None,
          batch_size: int | None, lr: float | None, optimizer: str, weight_decay: float | None, val_split: float,
          hflip: bool, seed: int, workers: int, cache_dir: str | None, gpu_augment: str, device: str, amp: bool,
          pretrained: bool, weights_file: str | None, init_ckpt: str | None, freeze_backbone: bool, balance: bool,
          sync_bn: bool, calibrate: bool, nproc: int, max_restarts: int, resume: bool, force: bool, quiet: bool) -> None:
    """Train a classifier on DATA_DIR: a folder per class, or train/ and val/ holding those.

    Writes RUN_DIR/best.pt and last.pt (atomically; they carry the architecture, labels and
    preprocessing), metrics.json, curves.png and report.html (curves, confusion matrix, kernels,
    misclassified images). A killed run continues with --resume.

    \b
    Examples:
      edgecnn train data/shapes -o runs/shapes
      edgecnn train photos/ -o runs/photos --arch resnet8 --img-size 96 --epochs 40
      edgecnn train photos/ -o runs/photos --resume
      edgecnn train photos/ -o runs/mnv2 --arch mobilenet_v2 --pretrained --img-size 160   # ImageNet start
      edgecnn train photos/ -o runs/mnv2 --arch mobilenet_v2 --weights mobilenet_v2-7ebf99e0.pth   # offline
      edgecnn train few/ -o runs/few --init runs/photos/best.pt --freeze-backbone   # reuse your own model
      edgecnn train photos/ -o runs/photos --resume --epochs 60   # extend a finished run to 60 epochs
      edgecnn train photos/ -o runs/ddp --nproc 2          # data-parallel, 2 processes
      edgecnn train photos/ -o runs/ddp --nproc 2 --max-restarts 3   # a lost process restarts the group
      edgecnn train photos/ -o runs/x --cache-dir /scratch/cache      # decoded images cached on local disk
      torchrun --nproc_per_node 2 -m edgecnn train photos/ -o runs/ddp
    """
    run_dir = run_dir or Path("runs") / data_dir.resolve().name
    if (nproc > 1 or max_restarts > 0) and "LOCAL_RANK" not in os.environ:
        _launch(nproc, max_restarts, click.get_current_context())
        return

    from ..train import TrainConfig
    from ..train import train as run_training

    if init_ckpt and not resume:  # --init: the parent's architecture and input size, unless given
        from ..checkpoint import load_checkpoint

        parent = load_checkpoint(init_ckpt)
        if click.get_current_context().get_parameter_source("arch") == click.core.ParameterSource.DEFAULT:
            arch = parent.arch
        if img_size is None and arch == parent.arch:
            img_size = parent.spec.size
    overrides: dict[str, Any] = {k: v for k, v in {"img_size": img_size, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                                   "weight_decay": weight_decay, "weights": weights_file,
                                   "init": init_ckpt}.items() if v is not None}
    try:
        config = TrainConfig(arch=arch, optimizer=optimizer, val_split=val_split, hflip=hflip, seed=seed,
                             workers=workers, device=device, amp=amp, sync_bn=sync_bn, calibrate=calibrate,
                             gpu_augment=gpu_augment, pretrained=pretrained, freeze_backbone=freeze_backbone,
                             balance=balance, **overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if resume and force:
        raise click.UsageError("--resume continues the run and --force replaces it: give one of them")
    cache = None if cache_dir is not None and cache_dir.lower() == "none" else (cache_dir or "auto")
    result = run_training(data_dir, run_dir, config, resume=resume, epochs=epochs, force=force, progress=not quiet,
                          cache_dir=cache)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"best val accuracy {result.best_val_accuracy:.4f} (epoch {result.best_epoch}) in {result.seconds:.1f}s; "
                   f"checkpoint {run_dir / 'best.pt'}")


def _launch(nproc: int, max_restarts: int, ctx: click.Context) -> None:
    """Re-run this same command under PyTorch's own launcher, torch.distributed.run (torchrun)."""
    args: list[str] = []
    for param in ctx.command.params:
        if param.name in ("nproc", "max_restarts") or not isinstance(param, click.Option):
            continue
        value = ctx.params[param.name]
        if value is None or (param.is_flag and not param.secondary_opts and not value):
            continue
        if param.is_flag:
            args.append(param.opts[-1] if value or not param.secondary_opts else param.secondary_opts[-1])
        else:
            args += [param.opts[-1], str(value)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--max-restarts={max_restarts}", "-m", "edgecnn", "train", str(ctx.params["data_dir"]), *args]
    if ctx.params["run_dir"] is None:
        command += ["--out", str(Path("runs") / Path(ctx.params["data_dir"]).resolve().name)]
    click.echo(f"launching {nproc} processes: {' '.join(command[1:])}", err=True)
    env = dict(os.environ)
    if max_restarts:
        # torchrun shares its rendezvous store with the workers by default, and a restarted group can then read
        # the dead workers' addresses from it and fail to connect (pytorch/pytorch#135712): a fresh store per round.
        env[RESTART_STORE_ENV] = "1"
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 130
    if code:
        hint = (f" (after {max_restarts} restart(s))" if max_restarts else
                "; if a process was lost (killed, out of memory), --max-restarts N restarts the group from last.pt")
        raise click.ClickException(f"distributed training failed (exit code {code}){hint}; see the messages above")
