"""`edgecnn data synth`: write the built-in synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def data() -> None:
    """Make datasets.

    \b
    Examples:
      edgecnn data synth data/shapes
      edgecnn data synth data/shapes10 --classes 10 --per-class 300 --size 96
    """


@data.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", default=5, show_default=True, type=click.IntRange(2, 10), help="Number of shape classes.")
@click.option("--per-class", default=200, show_default=True, type=click.IntRange(5), help="Images per class, train and val together (80/20).")
@click.option("--size", default=64, show_default=True, type=click.IntRange(16, 1024), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same files.")
def synth(out_dir: Path, classes: int, per_class: int, size: int, seed: int) -> None:
    """Write a deterministic synthetic ImageFolder: OUT_DIR/{train,val}/<class>/*.png.

    Shapes and textures with random colours, position, scale, rotation, background and noise: a CNN has
    to learn their outlines, since no class differs in mean colour.

    \b
    Example:
      edgecnn data synth data/shapes --classes 5 --per-class 200
    """
    from ..synth import synthesize

    summary = synthesize(out_dir, classes=classes, per_class=per_class, size=size, seed=seed)
    click.echo(f"wrote {summary.train_images} train and {summary.val_images} val images of "
               f"{len(summary.classes)} classes ({', '.join(summary.classes)}) to {summary.root}")
