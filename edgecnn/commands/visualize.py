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
@click.option("--compare", "reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --image: compare MODEL (e.g. model.int8.onnx) with this model (its FP32 .onnx or .pt), layer "
                   "by layer.  [default: MODEL.onnx beside a MODEL.int8.onnx or MODEL.fp16.onnx]")
@click.option("--no-compare", is_flag=True, help="Do not look for the FP32 model beside a quantized MODEL.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the written files, each layer's ONNX tensor and the comparison as one JSON object.")
def visualize(model: Path, image: Path | None, out_dir: Path | None, data_dir: Path | None, reference: Path | None,
              no_compare: bool, as_json: bool) -> None:
    """Show what MODEL learned: a .pt checkpoint (full detail) or an .onnx model (what its graph holds).

    Writes kernels.png (first-layer kernels, deeper kernel magnitudes), with --image also
    features_stage<N>.png and softmax.png, and index.html to view them offline. Feature maps are
    named by stage (stage<N> is the N-th feature block: features[N-1], or resnet18's conv1, layer1..4)
    for .pt, FP32 and INT8 files alike. A quantized MODEL
    with its FP32 model beside it (or --compare) also gets fp32_vs_int8.png: each stage's maps in both,
    their difference, and both softmaxes. Given a run folder instead of a model, (re)writes its training
    report, RUN_DIR/report.html.

    \b
    Examples:
      edgecnn visualize runs/shapes/best.pt -o viz/
      edgecnn visualize runs/shapes/best.pt --image cat.jpg -o viz/cat
      edgecnn visualize model.onnx --image cat.jpg -o viz/onnx
      edgecnn visualize model.int8.onnx --image cat.jpg -o viz/int8     # + fp32_vs_int8.png (model.onnx beside it)
      edgecnn visualize model.int8.onnx --compare runs/shapes/best.pt --image cat.jpg -o viz/q
      edgecnn visualize runs/shapes --data data/shapes       # the training report
    """
    if model.is_dir():
        if image is not None or out_dir is not None or reference is not None:
            raise click.UsageError("a run folder takes only --data: its report goes to RUN_DIR/report.html")
        if not (model / "best.pt").is_file():
            raise click.BadParameter(f"{model} holds no best.pt; give a run folder written by `edgecnn train`, "
                                     "or a .pt/.onnx model", param_hint="MODEL")
        from ..report import write_training_report

        written = [write_training_report(model, data_dir=data_dir)]
    else:
        if data_dir is not None:
            raise click.UsageError("--data goes with a run folder; for a single image use --image")
        if reference is not None and (image is None or no_compare):
            raise click.UsageError("--compare needs --image (the maps are compared on it) and no --no-compare")
        from ..visualize import visualize as render

        result = render(model, out_dir or Path("viz") / model.stem, image=image, compare=reference,
                        auto_compare=not no_compare)
        if as_json:
            echo_json(result.to_dict())
            return
        written = result.files
        if result.reference is not None:
            click.echo(f"compared with {result.reference}", err=True)
    if as_json:
        echo_json({"files": [str(p) for p in written]})
        return
    for path in written:
        click.echo(str(path))
    click.echo(f"open {written[-1]} in a browser", err=True)
