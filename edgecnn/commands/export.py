"""`edgecnn export`: a checkpoint to one verified, self-contained ONNX file (edgecnn.export.export_onnx)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json

_INPUTS = ("uint8-nhwc", "float-nchw")  # edgecnn.runtime.spec's INPUT_*; literal so that --help loads nothing


def _batch(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
    if value == "dynamic":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"{value!r}: give 'dynamic' or a positive integer such as 1 or 8")


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output .onnx file. Default: model.onnx beside CHECKPOINT.")
@click.option("--opset", type=click.IntRange(18, 21), default=18, show_default=True, help="ONNX opset, recorded in the metadata.")
@click.option("--batch", default="dynamic", show_default=True, callback=_batch, metavar="dynamic|N",
              help="'dynamic' (any batch size) or a fixed batch size N.")
@click.option("--input", "input_kind", type=click.Choice(_INPUTS), default="uint8-nhwc", show_default=True,
              help="uint8-nhwc: the graph takes decoded RGB pixels and normalizes them itself; "
                   "float-nchw: the classic normalized float input.")
@click.option("--verify", "verify_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Also check ONNX against PyTorch on every image under this folder (random images are always checked).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def export(checkpoint: Path, out: Path | None, opset: int, batch: int | str, input_kind: str,
           verify_dir: Path | None, as_json: bool) -> None:
    """Export CHECKPOINT (best.pt from `edgecnn train`) to an ONNX file for onnxruntime.

    The file holds everything the runtime needs: uint8 RGB NHWC input at the model's size with
    normalization inside the graph, `logits` and `probabilities` outputs, BatchNorm folded, and the
    labels and preprocessing in its metadata. It is written only after onnxruntime and PyTorch agreed
    (every top-1 equal, probabilities within 1e-4); an existing file is replaced only then.

    \b
    Examples:
      edgecnn export runs/shapes/best.pt -o shapes.onnx
      edgecnn export runs/shapes/best.pt -o shapes.onnx --verify data/shapes/val
      edgecnn export runs/shapes/best.pt -o fixed8.onnx --batch 8 --input float-nchw
    """
    from ..export import export_onnx

    out = out or checkpoint.with_name("model.onnx")
    result = export_onnx(checkpoint, out, opset=opset, batch=batch, input=input_kind, verify_dir=verify_dir)
    if as_json:
        echo_json(result.to_dict())
        return
    real = f", {result.real_images} from {verify_dir}" if verify_dir else ""
    from ..runtime.output import human_bytes

    click.echo(f"wrote {result.path} ({human_bytes(result.size_bytes)}, {result.arch}, opset {result.opset}, "
               f"input {result.input}, batch {result.batch})")
    click.echo(f"verified against PyTorch on {result.verified_images} images ({result.verified_images - result.real_images} "
               f"random{real}): top-1 agreement {result.top1_agreement:.3f}, max |dp| {result.max_prob_diff:.1e}")
