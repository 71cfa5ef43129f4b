"""`edgecnn demo`: the whole pipeline on built-in synthetic data."""

from __future__ import annotations

from pathlib import Path

import click

from ..defaults import DEFAULT_DEMO_DIR


@click.command()
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULT_DEMO_DIR),
              show_default=True, help="Folder for the data, the run, the models and the reports.")
@click.option("--fresh", is_flag=True, help="Delete what an earlier demo left in the folder and redo every stage.")
def demo(out_dir: Path, fresh: bool) -> None:
    """Run the whole pipeline on built-in synthetic data, printing each stage.

    data -> train -> eval -> export -> quantize -> classify -> bench. Takes a few minutes on two CPU
    cores; a second run reuses the finished stages.

    \b
    Examples:
      edgecnn demo
      edgecnn demo -o /tmp/demo --fresh
    """
    from ..demo import run_demo

    run_demo(out_dir, fresh=fresh, echo=click.echo)
