"""`edgecnn train`: options mapped to TrainConfig and one call of edgecnn.train.train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from ..defaults import DEFAULT_ARCH, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_WEIGHT_DECAY


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder for best.pt, last.pt, metrics.json, curves.png, report.html. Default: runs/<DATA_DIR name>.")
@click.option("--arch", default=DEFAULT_ARCH, show_default=True, help="Architecture; see `edgecnn models`.")
@click.option("--img-size", type=int, default=None, help="Input side, a multiple of 8. Default: the architecture's.")
@click.option("--epochs", type=click.IntRange(1), default=None, help=f"Passes over the training set.  [default: {DEFAULT_EPOCHS}]")
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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--amp", is_flag=True, help="Mixed precision (CUDA: bfloat16, or float16 with loss scaling).")
@click.option("--sync-bn", is_flag=True, help="Synchronize BatchNorm statistics across processes.")
@click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
              help="Data-parallel processes on this machine, started through torch.distributed.run.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from last.pt.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def train(data_dir: Path, run_dir: Path | None, arch: str, img_size: int | None, epochs: int | None,
          batch_size: int | None, lr: float | None, optimizer: str, weight_decay: float | None, val_split: float,
          hflip: bool, seed: int, workers: int, device: str, amp: bool, sync_bn: bool, nproc: int, resume: bool,
          quiet: bool) -> None:
    """Train a classifier on DATA_DIR: a folder per class, or train/ and val/ holding those.

    Writes RUN_DIR/best.pt and last.pt (atomically; they carry the architecture, labels and
    preprocessing), metrics.json, curves.png and report.html (curves, confusion matrix, kernels,
    misclassified images). A killed run continues with --resume.

    \b
    Examples:
      edgecnn train data/shapes -o runs/shapes
      edgecnn train photos/ -o runs/photos --arch resnet8 --img-size 96 --epochs 40
      edgecnn train photos/ -o runs/photos --resume
      edgecnn train photos/ -o runs/ddp --nproc 2          # data-parallel, 2 processes
      torchrun --nproc_per_node 2 -m edgecnn train photos/ -o runs/ddp
    """
    run_dir = run_dir or Path("runs") / data_dir.resolve().name
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        _launch(nproc, click.get_current_context())
        return

    from ..train import TrainConfig
    from ..train import train as run_training

    overrides = {k: v for k, v in {"img_size": img_size, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                                   "weight_decay": weight_decay}.items() if v is not None}
    try:
        config = TrainConfig(arch=arch, optimizer=optimizer, val_split=val_split, hflip=hflip, seed=seed,
                             workers=workers, device=device, amp=amp, sync_bn=sync_bn, **overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    result = run_training(data_dir, run_dir, config, resume=resume, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"best val accuracy {result.best_val_accuracy:.4f} (epoch {result.best_epoch}) in {result.seconds:.1f}s; "
                   f"checkpoint {run_dir / 'best.pt'}")


def _launch(nproc: int, ctx: click.Context) -> None:
    """Re-run this same command under PyTorch's own launcher, torch.distributed.run (torchrun)."""
    args: list[str] = []
    for param in ctx.command.params:
        if param.name == "nproc" or not isinstance(param, click.Option):
            continue
        value = ctx.params[param.name]
        if value is None or (param.is_flag and not param.secondary_opts and not value):
            continue
        if param.is_flag:
            args.append(param.opts[-1] if value or not param.secondary_opts else param.secondary_opts[-1])
        else:
            args += [param.opts[-1], str(value)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "edgecnn", "train", str(ctx.params["data_dir"]), *args]
    if ctx.params["run_dir"] is None:
        command += ["--out", str(Path("runs") / Path(ctx.params["data_dir"]).resolve().name)]
    click.echo(f"launching {nproc} processes: {' '.join(command[1:])}", err=True)
    try:
        code = subprocess.call(command)
    except KeyboardInterrupt:
        code = 130
    if code:
        raise click.ClickException(f"distributed training failed (exit code {code}); see the messages above")
