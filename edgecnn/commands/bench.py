"""`edgecnn bench`: latency, throughput, memory and efficiency of ONNX models (and PyTorch), side by side."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, int_list


@click.command()
@click.argument("models", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--batch", "batches", default="1", show_default=True, callback=int_list,
              help="Batch sizes, comma-separated, e.g. 1,8.")
@click.option("--threads", "threads", default="1", show_default=True, callback=int_list,
              help="Intra-op thread counts, comma-separated, e.g. 1,2.")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True, help="Unmeasured runs after the first.")
@click.option("--runs", type=click.IntRange(1), default=None, help="Measured runs per row.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Measured time per row instead of --runs.  [default: 2]")
@click.option("--torch", "torch_checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Add PyTorch eager (and torch.compile) rows for this checkpoint.")
@click.option("--compile/--no-compile", "torch_compile", default=True, show_default=True,
              help="With --torch: also try torch.compile (time-boxed by --compile-timeout).")
@click.option("--compile-timeout", type=click.FloatRange(min=1), default=180, show_default=True,
              help="Seconds torch.compile may take before its row is reported unavailable.")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Add end-to-end rows: `classify images` over this folder, and a naive one-at-a-time loop.")
@click.option("--images-limit", type=click.IntRange(1), default=None, help="Use at most this many images from --images.")
@click.option("--images-batch", type=click.IntRange(1), default=16, show_default=True,
              help="Batch size of the end-to-end classify rows.")
@click.option("--openvino", is_flag=True,
              help="Add OpenVINO rows (CPU, the file's own precision: a QDQ file runs as INT8) for every model, "
                   "in the same rounds. Needs pip install 'edgecnn[openvino]'.")
@click.option("--eval", "eval_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Add each model's accuracy on this labelled folder (a sub-folder per class, or a dataset root "
                   "with val/) to its rows, scored once per file as `edgecnn eval` scores it.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="onnxruntime execution provider (and PyTorch's device); auto takes CUDA when available.")
@click.option("--in-process", is_flag=True,
              help="Run every row in this process (faster start; peak memory is then the process's so far, "
                   "and torch.compile is not time-boxed).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with a `rows` list.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write bench.json and bench.png here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def bench(models: tuple[str, ...], batches: list[int], threads: list[int], warmup: int, runs: int | None,
          seconds: float | None, torch_checkpoint: str | None, torch_compile: bool, compile_timeout: float,
          images_dir: str | None, images_limit: int | None, images_batch: int, openvino: bool,
          eval_dir: str | None, device: str, in_process: bool,
          as_json: bool, out_dir: Path | None, quiet: bool) -> None:
    """Measure MODELS (.onnx): file size, session creation, first run, latency percentiles (p99.9 from 1000
    runs), images/s, CPU% (process CPU time over wall time; 100 = one busy core), peak memory, GFLOP/s and the
    share of this machine's measured FP32 peak. With --eval DIR, each file's accuracy too (column acc), so
    that FP32 and INT8 show latency, size and accuracy side by side; OpenVINO rows are scored through
    OpenVINO, --torch rows through PyTorch.

    Every row runs in its own process, and the rows take turns in rounds so that a busy machine slows them
    alike. Times are in ms (end-to-end rows: per image, amortized over a pass over the folder).

    \b
    Examples:
      edgecnn bench edgecnn-demo/model.onnx edgecnn-demo/model.int8.onnx
      edgecnn bench model.onnx --batch 1,8 --threads 1,2 --seconds 5
      edgecnn bench model.onnx model.int8.onnx --eval data/val
      edgecnn bench model.onnx model.int8.onnx --openvino --runs 2000
      edgecnn bench model.onnx model.int8.onnx --torch runs/shapes/best.pt --no-compile
      edgecnn bench model.int8.onnx --images photos/ --threads 2 -o bench/
      edgecnn bench model.onnx --runs 100 --json
    """
    if runs is not None and seconds is not None:
        raise click.UsageError("give --runs or --seconds, not both")
    if not models and not torch_checkpoint:
        raise click.UsageError("give at least one .onnx model, e.g. edgecnn bench model.onnx")
    if images_dir and not models:
        raise click.UsageError("--images needs an .onnx model to classify with")
    _check_kinds(models, torch_checkpoint)
    from ..bench import bench as run_bench
    from ..bench import write_outputs

    say = None if quiet or as_json else (lambda msg: click.echo(msg, err=True))
    report = run_bench(list(models), batches=batches, threads=threads, warmup=warmup, runs=runs, seconds=seconds,
                       torch_checkpoint=torch_checkpoint, torch_compile=torch_compile, compile_timeout=compile_timeout,
                       images_dir=images_dir, images_limit=images_limit, images_batch=images_batch, openvino=openvino,
                       eval_dir=eval_dir, device=device,
                       isolate=not in_process, progress=say)
    if out_dir is not None:
        written = write_outputs(report, out_dir)
        if not as_json:
            click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)
    if as_json:
        echo_json(report.to_dict())
    else:
        _table(report)
    failed = [r for r in report.rows if r.note and r.variant != "compile"]  # torch.compile may be missing: not an error
    if failed:
        raise click.ClickException(f"{len(failed)} row(s) could not run: {failed[0].label}: {failed[0].note}")


def _check_kinds(models: tuple[str, ...], torch_checkpoint: str | None) -> None:
    """A checkpoint among MODELS or an ONNX file after --torch: one line naming the fix, before any row runs."""
    from ..runtime.filekind import not_checkpoint_message, not_onnx_message

    for model in models:
        message = not_onnx_message(model, also=f", or bench it as it is with --torch {model}")
        if message:
            raise click.UsageError(message)
    if torch_checkpoint:
        message = not_checkpoint_message(torch_checkpoint)
        if message:
            raise click.UsageError(f"--torch {message}")


def _table(report) -> None:
    from ..bench import format_table

    m = report.machine
    peak = f"; FP32 peak {report.peak_gflops:.1f} GFLOP/s per core (SGEMM)" if report.peak_gflops else ""
    click.echo(f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, onnxruntime {m.get('onnxruntime', '?')}{peak}")
    click.echo(format_table(report))
