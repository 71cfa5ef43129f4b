"""`edgecnn calibrate`: temperature-scale an existing ONNX classifier's probabilities and store its unknown-input rule."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, float_triple


@click.command("calibrate")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Calibration images, a folder per class (DATA/val when present); not the training images.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The calibrated ONNX file to write (may be MODEL itself; written atomically).")
@click.option("--recall", type=click.FloatRange(0.5, 1.0), default=0.95, show_default=True,
              help="Share of in-distribution images the unknown-input threshold keeps.")
@click.option("--score", type=click.Choice(["max_prob", "energy", "max_logit"]), default=None,
              help="Unknown-input score. [default: max_prob, the best measured; see benchmarks/results/calibration.md]")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Label file, one per line (models without edgecnn metadata).")
@click.option("--size", type=click.IntRange(8), default=None, help="Input size (models without metadata).")
@click.option("--mean", callback=float_triple, default=None, metavar="R,G,B", help="R,G,B mean on the 0..1 scale (models without metadata).")
@click.option("--std", callback=float_triple, default=None, metavar="R,G,B", help="R,G,B std on the 0..1 scale (models without metadata).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def calibrate(model: Path, data_dir: Path, out: Path, recall: float, score: str | None, labels: Path | None,
              size: int | None, mean, std, as_json: bool) -> None:
    """Calibrate MODEL's probabilities on DATA by temperature scaling and write OUT.

    Fits one temperature T that minimizes the negative log-likelihood on DATA and writes a copy of
    MODEL whose logits are divided by T (a Div before the softmax: any precision, INT8 included), so
    a 0.9 means right nine times in ten. Top-1 answers do not change. Also picks the unknown-input
    threshold for `classify --reject-unknown` on the same images. Metadata is kept; edgecnn.temperature
    and edgecnn.ood are added. Models trained by `edgecnn train` are calibrated already (unless
    --no-calibrate); this is for other models, or to recalibrate on data closer to the field.

    Prints T and the expected calibration error (15 bins) and NLL before and after.

    \b
    Examples:
      edgecnn calibrate model.int8.onnx --data photos/val -o model.cal.int8.onnx
      edgecnn calibrate mobilenet.onnx --data photos/val -o mobilenet.cal.onnx --labels labels.txt --json
    """
    from ..calibration_onnx import calibrate_onnx

    if out.suffix != ".onnx":
        raise click.BadParameter(f"{out}: the output should end in .onnx", param_hint="-o/--out")
    cal = calibrate_onnx(model, data_dir, out, recall=recall, score=score, labels=labels, size=size, mean=mean, std=std)
    if as_json:
        echo_json(cal.to_dict())
        return
    r = cal.result
    click.echo(f"temperature T = {r.temperature:.4f} fitted on {r.n} images of {data_dir} (from the model's {cal.source}); "
               f"accuracy {r.accuracy:.4f}, unchanged")
    click.echo(f"ECE ({r.bins} bins): {r.ece_before:.4f} -> {r.ece_after:.4f}   NLL: {r.nll_before:.4f} -> {r.nll_after:.4f}")
    ood = r.ood or {}
    click.echo(f"unknown inputs: {ood.get('score')} > {ood.get('threshold', 0):.4f} keeps {ood.get('recall', 0):.0%} of "
               f"these images (classify --reject-unknown)")
    click.echo(f"wrote {cal.path}")
