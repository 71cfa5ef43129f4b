"""`edgecnn eval`: accuracy, per-class precision/recall and the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json


@click.command("eval")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="FILE.png: write the reliability diagram there; a folder: confusion.png, reliability.png and eval.json.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="For .onnx models: onnxruntime execution provider; auto takes CUDA when available.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_(model: Path, data_dir: Path, out_dir: Path | None, batch_size: int, device: str, as_json: bool) -> None:
    """Evaluate MODEL (.pt checkpoint or .onnx) on DATA_DIR, a folder per class (DATA_DIR/val if present).

    Classes are matched by folder name, so the folder order does not matter.

    \b
    Examples:
      edgecnn eval runs/shapes/best.pt data/shapes/val
      edgecnn eval model.int8.onnx data/shapes --json
      edgecnn eval model.onnx photos/ -o report/
      edgecnn eval model.int8.onnx photos/ -o reliability.png   # calibration: accuracy against confidence
    """
    from ..calibration import ECE_BINS
    from ..evaluate import evaluate

    report = evaluate(model, data_dir, batch_size=batch_size, device=device)
    for _path, error in report.failures:
        click.echo(f"warning: skipped {error}", err=True)
    if out_dir is not None and out_dir.suffix.lower() == ".png":
        _write_reliability(report, out_dir)
    elif out_dir is not None:
        _write_outputs(report, out_dir)
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(f"{report.model}: accuracy {report.accuracy:.4f} on {report.n} images")
    click.echo(f"calibration: ECE {report.ece:.4f} ({ECE_BINS} bins), NLL {report.nll:.4f}")
    width = max(len(label) for label in report.labels) + 2
    click.echo(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'support':>8}")
    for label, m in report.per_class.items():
        click.echo(f"{label:<{width}} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['support']:>8d}")
    click.echo("confusion (rows = true, columns = predicted):")
    click.echo(" " * width + " ".join(f"{label[:6]:>6}" for label in report.labels))
    for label, row in zip(report.labels, report.confusion, strict=True):
        click.echo(f"{label:<{width}}" + " ".join(f"{v:>6d}" for v in row))


def _write_outputs(report, out_dir: Path) -> None:
    import json

    from ..fileio import atomic_path, atomic_write_text
    from ..plot import heatmap

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "confusion.png") as tmp:
        heatmap(report.confusion.tolist(), report.labels, title=f"confusion, accuracy {report.accuracy:.3f}").save(tmp, format="PNG")
    atomic_write_text(out_dir / "eval.json", json.dumps(report.to_dict(), indent=1) + "\n")
    _write_reliability(report, out_dir / "reliability.png")


def _write_reliability(report, path: Path) -> None:
    from ..calibration_plot import reliability_diagram
    from ..fileio import atomic_path

    picture = reliability_diagram(report.predictions, report.targets, title=f"{Path(report.model).name}: ECE {report.ece:.3f}")
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
