"""`edgecnn models`: the model family with parameters and multiply-accumulates."""

from __future__ import annotations

import click

from .common import echo_json


@click.command()
@click.option("--img-size", type=int, default=None, help="Input side for the MAC count; default: each model's own.")
@click.option("--classes", default=10, show_default=True, type=click.IntRange(2), help="Classes for the parameter count.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def models(img_size: int | None, classes: int, as_json: bool) -> None:
    """List the architectures that `edgecnn train --arch` accepts.

    \b
    Examples:
      edgecnn models
      edgecnn models --img-size 96 --json
    """
    from ..models import count_macs, count_params, create_model, list_models, model_info, validate_size

    if img_size is not None:
        try:
            validate_size(img_size)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--img-size") from None
    rows = []
    for name in list_models():
        info = model_info(name)
        size = img_size or info.default_size
        model = create_model(name, num_classes=classes)
        rows.append({"name": name, "default_size": info.default_size, "size": size, "params": count_params(model),
                     "macs": count_macs(model, size), "description": info.description})
    if as_json:
        for row in rows:
            echo_json(row)
        return
    click.echo(f"{'name':<18} {'size':>5} {'params':>9} {'MACs':>9}  description")
    for r in rows:
        click.echo(f"{r['name']:<18} {r['size']:>5} {r['params'] / 1e6:>8.2f}M {r['macs'] / 1e6:>8.1f}M  {r['description']}")
