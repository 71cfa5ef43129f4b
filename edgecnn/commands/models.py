"""`edgecnn models`: the registered architectures with parameters, multiply-accumulates and ImageNet top-1."""

from __future__ import annotations

from typing import Any

import click

from ..defaults import DEFAULT_ARCH
from .common import echo_json


@click.command()
@click.option("--img-size", type=int, default=None, help="Input side for the MAC count; default: each model's own.")
@click.option("--classes", default=10, show_default=True, type=click.IntRange(2), help="Classes for the parameter count.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def models(img_size: int | None, classes: int, as_json: bool) -> None:
    """List the architectures that `edgecnn train --arch` accepts.

    edgecnn's own compact family trains from scratch; the torchvision backbones (default size 224) can
    start from ImageNet weights (--pretrained, or --weights FILE offline). The top-1 is that of those
    weights on ImageNet-1K as torchvision publishes it, blank for edgecnn's own families.

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
    rows: list[dict[str, Any]] = []
    for name in list_models():
        info = model_info(name)
        size = img_size or info.default_size
        model = create_model(name, num_classes=classes)
        rows.append({"name": name, "default": name == DEFAULT_ARCH, "default_size": info.default_size, "size": size,
                     "classes": classes, "params": count_params(model), "macs": count_macs(model, size),
                     "imagenet_top1": info.imagenet_top1, "weights": info.weights, "crop_pct": info.crop_pct,
                     "interpolation": info.interpolation, "description": info.description})
    if as_json:
        for row in rows:
            echo_json(row)
        return
    click.echo(f"{'name':<20} {'size':>5} {'params':>9} {'MACs':>9} {'top-1':>6}  description")
    for r in rows:
        top1 = f"{r['imagenet_top1']:.1f}" if r["imagenet_top1"] is not None else ""
        name = r["name"] + (" *" if r["default"] else "")
        click.echo(f"{name:<20} {r['size']:>5} {r['params'] / 1e6:>8.2f}M {r['macs'] / 1e6:>8.1f}M {top1:>6}  "
                   f"{r['description']}")
    click.echo(f"\n* the default architecture. Parameters for {classes} classes (--classes); MACs at the size shown; "
               "top-1: ImageNet-1K accuracy (%) of the torchvision weights that --pretrained loads.")
