"""`edgecnn quantize`: an exported ONNX model to INT8 (or FP16), checked against FP32 (edgecnn.export.quantize)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--calib", "calib_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of representative images (class sub-folders or not), e.g. the training set. "
                   "Required for static INT8.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file. Default: MODEL with .int8.onnx (.int8-dynamic.onnx, .fp16.onnx).")
@click.option("--calib-size", type=click.IntRange(1), default=256, show_default=True, help="Calibration images (a seeded random sample).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True,
              help="How activation ranges are chosen from the calibration images.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="One weight scale per output channel (needed for depthwise convolutions) or one per tensor.")
@click.option("--eval", "eval_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Class-folder tree (or one with val/) to score FP32 and the quantized model on.")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Largest accepted accuracy drop with --eval, as a fraction (0.01 = 1 point).")
@click.option("--force", is_flag=True, help="Keep the file even when the accuracy drop exceeds --max-drop.")
@click.option("--mode", type=click.Choice(["static", "dynamic"]), default="static", show_default=True,
              help="static: INT8 weights and activations (fastest on CPU). dynamic: INT8 weights only.")
@click.option("--fp16", is_flag=True, help="Convert to float16 instead (for GPUs); inputs and outputs keep their types.")
@click.option("--speed-seconds", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Time spent measuring FP32 vs the quantized model (batch 1, 1 thread) on this CPU; 0 skips it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def quantize(model: Path, calib_dir: Path | None, out: Path | None, calib_size: int, method: str, per_channel: bool,
             eval_dir: Path | None, max_drop: float, force: bool, mode: str, fp16: bool, speed_seconds: float,
             as_json: bool) -> None:
    """Quantize MODEL (an .onnx file from `edgecnn export`) for faster, smaller CPU inference.

    Static INT8 (the default) calibrates activation ranges on real images seen through the runtime's
    own preprocessing: about 3x smaller than FP32, and usually faster on a CPU. How much faster depends
    on the model and the CPU, so the report measures it here (batch 1, one thread, FP32 and INT8 side by
    side) and says when INT8 is under 1.25x FP32's speed: then ship FP32 unless the size matters. The
    labels and preprocessing metadata are kept; a uint8 input stays uint8. Without --eval the report
    gives the FP32/INT8 top-1 agreement on the calibration images.

    \b
    When to use the alternatives:
      --mode dynamic  no representative images at hand: weights stored in INT8 (about 3x smaller),
                      activations quantized on the fly; on CNNs it is 2-5x SLOWER than FP32 on
                      CPU (ConvInteger), so use it for download size only.
      --fp16          a GPU (onnxruntime-gpu, CUDA): half the size, FP32's accuracy; on a CPU it
                      runs 1.2-1.5x slower than FP32 (measured on x86), so not for CPUs.

    \b
    Examples:
      edgecnn quantize shapes.onnx --calib data/shapes/train
      edgecnn quantize shapes.onnx --calib data/shapes/train --eval data/shapes/val --max-drop 0.01
      edgecnn quantize shapes.onnx --calib data/shapes/train --method entropy -o shapes.q.onnx
      edgecnn quantize shapes.onnx --mode dynamic
      edgecnn quantize shapes.onnx --fp16 --calib data/shapes/val
    """
    from ..export import quantize as run_quantize

    if mode == "static" and not fp16 and calib_dir is None:
        raise click.UsageError("static INT8 needs calibration images: add --calib DATA_DIR (or use --mode dynamic)")
    suffix = ".fp16.onnx" if fp16 else (".int8-dynamic.onnx" if mode == "dynamic" else ".int8.onnx")
    out = out or model.with_name(model.name.removesuffix(".onnx") + suffix)
    result = run_quantize(model, calib_dir, out, calib_size=calib_size, method=method, per_channel=per_channel,
                          eval_dir=eval_dir, max_drop=max_drop, force=force, mode=mode, fp16=fp16,
                          speed_seconds=speed_seconds)
    if as_json:
        echo_json(result.to_dict())
    else:
        _report(result)
    if not result.passed:  # written only because of --force; still a failed check for scripts
        from ..export.quantize import drop_message

        raise click.ClickException(f"{drop_message(result, max_drop)}; {out} kept because of --force")


def _report(result) -> None:
    from ..runtime.output import human_bytes

    click.echo(f"wrote {result.path} ({result.precision}): {human_bytes(result.quant_bytes)}, "
               f"FP32 {human_bytes(result.fp32_bytes)}, {result.size_ratio:.2f}x smaller")
    if result.fp32_accuracy is not None:
        click.echo(f"accuracy on {result.eval_images} images: FP32 {result.fp32_accuracy:.4f}, {result.precision} "
                   f"{result.quant_accuracy:.4f}, drop {result.accuracy_drop * 100:+.2f} points")
    if result.agreement is not None:
        click.echo(f"top-1 agreement FP32 vs {result.precision}: {result.agreement:.4f} on {result.agreement_images} "
                   f"{result.agreement_on} images")
    else:
        click.echo(f"top-1 agreement FP32 vs {result.precision}: not measured, no images "
                   "(give --calib or --eval to compare on images)")
    if result.speedup is not None:
        click.echo(f"speed on this CPU (batch 1, 1 thread): FP32 {result.fp32_ms:.3f} ms, {result.precision} "
                   f"{result.quant_ms:.3f} ms, {result.speedup:.2f}x")
    if result.recommendation:
        click.echo(f"note: {result.recommendation}")
