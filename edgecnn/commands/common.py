"""Helpers shared by the command modules: JSON output and comma-separated option values."""

from __future__ import annotations

import json
from typing import Any

import click


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, separators=(",", ":"), default=str))


def int_list(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> list[int] | None:
    """Callback for options such as ``--batch 1,8``."""
    if value is None:
        return None
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 1,8") from None
    if not items or any(v < 1 for v in items):
        raise click.BadParameter(f"{value!r}: give positive integers, e.g. 1,8")
    return items


def float_triple(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> tuple[float, float, float] | None:
    """Callback for ``--mean 0.485,0.456,0.406``."""
    from ..runtime.spec import parse_rgb

    if value is None:
        return None
    try:
        return parse_rgb(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
