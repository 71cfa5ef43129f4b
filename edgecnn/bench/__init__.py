"""Latency, throughput, memory and efficiency of models, side by side: the library behind `edgecnn bench`.

    report = bench(["model.onnx", "model.int8.onnx"], batches=[1, 8], threads=[1, 2], seconds=2)
    print(format_table(report)); report.to_dict()["rows"][0]["p50_ms"]

One module per job: rows (a configuration, its measurements, the report), stats (percentiles, summaries,
GFLOP/s), runners (one class per backend, timing one configuration), protocol (worker processes and their
JSON lines), run (bench() itself: checks, set-up, interleaved rounds), profiling (MACs from the ONNX graph,
operator profiles, cold starts, the machine), accuracy (each file's score on --eval DIR) and output (table,
chart, files). worker is the entry point of
every subprocess: ``python -m edgecnn.bench.worker JOB ...``.

Importing this package imports neither torch nor onnxruntime nor numpy: the workers import what their row
needs, and the runtime's own import time is measured there, in a fresh interpreter.
"""

from .accuracy import Accuracy, accuracies
from .output import COLUMNS, chart, columns, format_table, table_rows, write_outputs
from .profiling import cold_starts, machine_info, onnx_macs, profile_operators
from .protocol import peak_rss_mb
from .rows import (
    KIND_CLASSIFY,
    KIND_MODEL,
    KIND_NAIVE,
    META_MACS,
    BenchError,
    BenchReport,
    BenchRow,
    Clock,
    RowConfig,
    WorkerError,
)
from .run import COMPILE_TIMEOUT_S, DEFAULT_SECONDS, bench
from .stats import efficiency, percentile, summarize

__all__ = [
    "COLUMNS",
    "COMPILE_TIMEOUT_S",
    "Accuracy",
    "DEFAULT_SECONDS",
    "KIND_CLASSIFY",
    "KIND_MODEL",
    "KIND_NAIVE",
    "META_MACS",
    "BenchError",
    "BenchReport",
    "BenchRow",
    "Clock",
    "RowConfig",
    "WorkerError",
    "accuracies",
    "bench",
    "chart",
    "cold_starts",
    "columns",
    "efficiency",
    "format_table",
    "machine_info",
    "onnx_macs",
    "peak_rss_mb",
    "percentile",
    "profile_operators",
    "summarize",
    "table_rows",
    "write_outputs",
]
