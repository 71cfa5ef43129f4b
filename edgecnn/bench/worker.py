"""The entry point of every bench subprocess: ``python -m edgecnn.bench.worker JOB [ARGS...]``.

    row                                    one configuration over stdin/stdout in JSON lines (protocol.Remote)
    profile MODEL THREADS BATCH RUNS DEVICE  onnxruntime's operator profile (profiling.operator_profile)
    cold-start MODEL DEVICE THREADS|none   import edgecnn.runtime, then create_session (profiling.cold_start)
    probe-sgemm N REPEATS                  single-thread SGEMM through numpy (peak.sgemm_numpy)
    probe-ort-sgemm N REPEATS              the same through onnxruntime (peak.sgemm_onnxruntime)

The one-shot jobs print one JSON line. Each job imports what it needs when it starts, so that the imports
a job times (a row's setup, a cold start) are paid in front of its clock; nothing here imports numpy.
Nothing imports this module: it is only ever run.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _one_shot(job: str, args: list[str]) -> Any:
    if job == "profile":
        from .profiling import operator_profile

        model, threads, batch, runs, device = args
        return operator_profile(model, int(threads), int(batch), int(runs), device)
    if job == "cold-start":
        from .profiling import cold_start

        model, device, threads = args
        return cold_start(model, device, None if threads == "none" else int(threads))
    if job in ("probe-sgemm", "probe-ort-sgemm"):
        from ..peak import sgemm_numpy, sgemm_onnxruntime

        n, repeats = (int(a) for a in args)
        return (sgemm_numpy if job == "probe-sgemm" else sgemm_onnxruntime)(n, repeats)
    raise SystemExit(f"unknown bench worker job {job!r}; one of: row, profile, cold-start, probe-sgemm, probe-ort-sgemm")


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m edgecnn.bench.worker JOB [ARGS...]")
    if argv[0] == "row":
        from .protocol import serve_row

        serve_row(sys.stdin)
        return
    print(json.dumps(_one_shot(argv[0], argv[1:])))


if __name__ == "__main__":
    main(sys.argv[1:])
