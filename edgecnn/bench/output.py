"""bench's output: the readable (or Markdown) table, the bench.png chart, and bench.json."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rows import BenchReport, BenchRow

if TYPE_CHECKING:
    from PIL import Image

def _human_bytes(n: int) -> str:
    from ..runtime.output import human_bytes  # here, not at the top: edgecnn.runtime imports onnxruntime

    return human_bytes(n)


COLUMNS: list[tuple[str, str, str | Callable[[Any], str]]] = [  # (header, attribute, format string or function)
    ("model", "label", "{}"), ("size", "size_bytes", _human_bytes), ("acc", "accuracy", "{:.2%}"), ("init", "init_ms", "{:.1f}"),
    ("first", "first_ms", "{:.2f}"), ("p50", "p50_ms", "{:.3f}"), ("p90", "p90_ms", "{:.3f}"), ("p99", "p99_ms", "{:.3f}"),
    ("p99.9", "p999_ms", "{:.3f}"), ("mean", "mean_ms", "{:.3f}"), ("std", "std_ms", "{:.3f}"),
    ("img/s", "throughput_ips", "{:.1f}"), ("CPU%", "cpu_percent", "{:.0f}"), ("MB", "peak_rss_mb", "{:.0f}"),
    ("GFLOP/s", "gflops", "{:.1f}"), ("%peak", "peak_fraction", "{:.0%}"),
]


def _label(row: BenchRow, names: Mapping[str, str] | None) -> str:
    return row.named(names[row.model]) if names and row.model in names else row.label


def _scored(report: BenchReport) -> bool:
    return any(r.accuracy is not None or r.accuracy_note for r in report.rows)


def columns(report: BenchReport) -> list[tuple[str, str, str | Callable[[Any], str]]]:
    """COLUMNS, less `acc` when the report has no accuracy (no --eval): a column of dashes says nothing."""
    return [c for c in COLUMNS if c[1] != "accuracy" or _scored(report)]


def table_rows(report: BenchReport, names: Mapping[str, str] | None = None) -> list[list[str]]:
    out = []
    for row in report.rows:
        if row.note:
            out.append([_label(row, names), row.note])
            continue
        cells = []
        for _, attr, fmt in columns(report):
            value = _label(row, names) if attr == "label" else getattr(row, attr)
            cells.append("-" if value is None else fmt.format(value) if isinstance(fmt, str) else fmt(value))
        out.append(cells)
    return out


def format_table(report: BenchReport, *, markdown: bool = False, names: Mapping[str, str] | None = None) -> str:
    """The readable table: times in ms (end-to-end rows: per image, amortized), memory in MB, the file's size,
    CPU% as 100 per busy core; p99.9 only where a row had enough runs; `acc` (top-1 on --eval DIR) only with it.

    ``names`` maps a model path to the name shown for it (default: the file name).
    """
    header = [h for h, _, _ in columns(report)]
    body = table_rows(report, names)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        for cells in body:
            cells = cells + [""] * (len(header) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    widths = [max([len(header[i]), *(len(c[i]) for c in body if len(c) == len(header))]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    for cells in body:
        if len(cells) != len(header):
            lines.append(f"{cells[0].ljust(widths[0])}  {cells[1]}")
        else:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    for row in report.rows:
        if row.stages_ms:
            split = ", ".join(f"{k} {v:.2f}" for k, v in row.stages_ms.items())
            lines.append(f"  {_label(row, names)}: ms per image: {split}")
    scored = {(r.model, r.backend): r for r in report.rows if r.accuracy is not None}
    if scored:
        counts = sorted({r.eval_images for r in scored.values() if r.eval_images is not None})
        where = report.settings.get("eval_dir") or "the --eval folder"
        lines.append(f"  acc: top-1 on {', '.join(str(n) for n in counts)} images of {where}, once per file and backend")
    for (model, backend), row in {(r.model, r.backend): r for r in report.rows if r.accuracy_note}.items():
        name = names[model] if names and model in names else Path(model).name
        lines.append(f"  {name} {backend}: acc {row.accuracy_note}")
    return "\n".join(lines)


def chart(report: BenchReport, names: Mapping[str, str] | None = None) -> Image.Image | None:
    """bench.png: throughput and p50 latency of every measured row, side by side."""
    from ..plot import bar_chart, hstack

    rows = [r for r in report.rows if r.throughput_ips is not None]
    if not rows:
        return None
    # With --eval, each bar's label carries its file's accuracy: speed and accuracy in one picture.
    labels = [_label(r, names) + ("" if r.accuracy is None else f"  acc {r.accuracy:.1%}") for r in rows]
    best = max(range(len(rows)), key=lambda i: rows[i].throughput_ips or 0.0)
    left = bar_chart(labels, [r.throughput_ips or 0.0 for r in rows], title="throughput (images/s, higher is better)",
                     highlight=best, value_format="{:.0f}")
    fastest = min(range(len(rows)), key=lambda i: rows[i].p50_ms or float("inf"))
    right = bar_chart(labels, [r.p50_ms or 0.0 for r in rows], title="p50 latency (ms per run, lower is better)",
                      highlight=fastest, value_format="{:.2f}")
    return hstack([left, right])


def write_outputs(report: BenchReport, out_dir: str | os.PathLike, names: Mapping[str, str] | None = None) -> list[Path]:
    """OUT/bench.json and OUT/bench.png, each written atomically."""
    from ..fileio import atomic_path, atomic_write_text

    out = Path(out_dir)
    written = [out / "bench.json"]
    atomic_write_text(written[0], json.dumps(report.to_dict(), indent=1))
    image = chart(report, names)
    if image is not None:
        with atomic_path(out / "bench.png") as tmp:
            image.save(tmp, format="PNG")
        written.append(out / "bench.png")
    return written
