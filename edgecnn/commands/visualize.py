"""`edgecnn visualize`: kernels, feature maps and softmax of a model as PNGs and an offline index.html."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json


@click.command("visualize")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Also draw this image's feature maps at several depths and its softmax.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the PNGs and index.html.  [default: viz/<MODEL name>]")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="With a run folder as MODEL: the dataset it was trained on, for the misclassified examples.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as one JSON object.")
def visualize(model: Path, image: Path | None, out_dir: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Show what MODEL learned: a .pt checkpoint (full detail) or an .onnx model (what its graph holds).

    Writes kernels.png (first-layer kernels, deeper kernel magnitudes), with --image also
    features_<layer>.png and softmax.png, and index.html to view them offline. Given a run folder
    instead of a model, (re)writes its training report, RUN_DIR/report.html.

    \b
    Examples:
      edgecnn visualize runs/shapes/best.pt -o viz/
      edgecnn visualize runs/shapes/best.pt --image cat.jpg -o viz/cat
      edgecnn visualize model.onnx --image cat.jpg -o viz/onnx
      edgecnn visualize runs/shapes --data data/shapes       # the training report
    """
    if model.is_dir():
        if image is not None or out_dir is not None:
            raise click.UsageError("a run folder takes only --data: its report goes to RUN_DIR/report.html")
        if not (model / "best.pt").is_file():
            raise click.BadParameter(f"{model} holds no best.pt; give a run folder written by `edgecnn train`, "
                                     "or a .pt/.onnx model", param_hint="MODEL")
        from ..report import write_training_report

        written = [write_training_report(model, data_dir=data_dir)]
    else:
        if data_dir is not None:
            raise click.UsageError("--data goes with a run folder; for a single image use --image")
        from ..visualize import visualize as render

        written = render(model, out_dir or Path("viz") / model.stem, image=image)
    if as_json:
        echo_json({"files": [str(p) for p in written]})
        return
    for path in written:
        click.echo(str(path))
    click.echo(f"open {written[-1]} in a browser", err=True)
