"""The arithmetic of bench: latency percentiles and summaries (numpy), and GFLOP/s against the peak."""

from __future__ import annotations

import os
from collections.abc import Sequence

P999_MIN_RUNS = 1000  # p99.9 from fewer runs would be the maximum, or an interpolation towards it


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's percentile (linear interpolation between closest ranks); ``q`` in [0, 100]."""
    # numpy is imported here, not at the top: every bench worker imports this package before it times
    # its own imports (numpy among them), and a preloaded numpy would hide part of that cost.
    import numpy as np

    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(seconds: Sequence[float], images_per_run: int) -> dict[str, float | None]:
    """Latency distribution in ms of runs that took ``seconds`` each, and images/s at the mean.

    p999_ms is None below P999_MIN_RUNS runs, as onnxruntime_perf_test leaves it out.
    """
    import numpy as np

    if not seconds:
        raise ValueError("no runs to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99, p999 = (float(v) for v in np.percentile(ms, [50, 90, 99, 99.9]))
    mean = float(ms.mean())
    return {
        "min_ms": float(ms.min()), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "p999_ms": p999 if len(ms) >= P999_MIN_RUNS else None,
        "max_ms": float(ms.max()), "mean_ms": mean, "std_ms": float(ms.std()),
        "throughput_ips": images_per_run / (mean / 1e3) if mean > 0 else float("inf"),
    }


def cpu_percent(cpu_s: float, wall_s: float) -> float | None:
    """Process CPU time over wall time, in percent of one core (onnxruntime_perf_test's "CPU usage")."""
    return 100.0 * cpu_s / wall_s if wall_s > 0 else None


def efficiency(macs: int | None, batch: int, latency_ms: float | None, *, peak_gflops: float | None,
               threads: int = 1) -> tuple[float | None, float | None]:
    """(GFLOP/s, fraction of peak): one MAC is two FLOPs; the peak scales with the cores the row may use."""
    if not macs or not latency_ms or latency_ms <= 0:
        return None, None
    gflops = 2 * macs * batch / (latency_ms / 1e3) / 1e9
    cores = max(1, min(threads, os.cpu_count() or 1))
    return gflops, (gflops / (peak_gflops * cores) if peak_gflops else None)
